"""The web UI's Chargeback tab: a live per-user and per-tier table, with CSV download."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

from flask import Response, jsonify, request
from locust.env import Environment

from .run import Run

COLUMNS = [("tier", "Tier"), ("user", "User"), ("sent", "Sent"), ("authorized", "Authorized"),
           ("limited", "Limited (429)"), ("rejected", "Rejected (401/403)"), ("errors", "Errors"),
           ("prompt_tokens", "Prompt tokens"), ("completion_tokens", "Completion tokens"),
           ("total_tokens", "Total tokens"), ("cost", "Cost")]
ALL_USERS = "(all users)"


def table_rows(run: Run) -> list[dict[str, Any]]:
    """Per-user rows, each tier followed by its total row (user `(all users)`)."""
    users, tiers = run.ledger.table(run.plan)
    rows: list[dict[str, Any]] = []
    for total in tiers:
        rows += [r for r in users if r["tier"] == total["tier"]]
        rows.append({**total, "user": ALL_USERS})
    return rows


def register(environment: Environment, run: Run) -> None:
    """Add the tab, its data (inside /stats/requests, as Locust's UI expects) and the CSV route."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    web_ui.template_args.update(
        extended_tabs=[{"title": "Chargeback", "key": "chargeback"}],
        extended_tables=[{"key": "chargeback", "structure": [{"key": k, "title": t} for k, t in COLUMNS]}],
        extended_csv_files=[{"href": "/chargeback/csv", "title": "Download the chargeback table (CSV)"}],
    )

    @web_ui.app.after_request
    def add_chargeback_stats(response: Response) -> Response:
        if request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": "chargeback", "data": table_rows(run)}]
            response.set_data(json.dumps(data))
        return response

    @web_ui.app.route("/chargeback/table")
    def chargeback_table() -> Response:
        return jsonify({"currency": run.plan.currency, "rows": table_rows(run)})

    @web_ui.app.route("/chargeback/csv")
    def chargeback_csv() -> Response:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[k for k, _ in COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table_rows(run))
        return Response(out.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=chargeback.csv"})
