"""The web UI: the Chargeback tab (run id, tiers with limits and prices, the live per-tier totals, the top users by
calls and by limited with their limit markers, a search by user, CSV, Verify) and the start form's scenario picker,
drawn by users/static/chargeback.js.

Routes: /chargeback/table (the tab's JSON: `?top=N` users per top list, `?user=TEXT` the users whose name holds it),
/chargeback/csv (every user), /chargeback/scenarios (the picker's choices), /chargeback/verify (GET: the checks'
status and results; POST: run them on the last run record), /chargeback/static/<file>; behind Locust's --web-login
when it is on. A POST /swarm first selects its form's `scenario` (users.shape.choose_scenario).
Nothing served holds an API key: the tab reads the Plan's masked summary, never its identities.
With 10,000 identities a refresh costs one pass over the ledger's rows (the totals, two top-N selections and the
search), never a row per user to the browser: the CSV is where every user is.
"""
from __future__ import annotations

import csv
import heapq
import io
import json
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gevent
from flask import Response, jsonify, request, send_from_directory
from flask_login import current_user
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING

from chargeback.ledger import COUNTS, MODEL_COUNTS, Ledger, totals_by
from chargeback.plan import Plan, Price
from chargeback.prometheus import PrometheusAuth
from chargeback.pytest_plugin import CheckResult, check_results
from chargeback.record import COMPLETE, INCOMPLETE, RUNNING, RunRecord
from chargeback.summary import PlanSummary
from scenarios import SCENARIOS

from .run import Run
from .shape import choose_scenario

COLUMNS = [("tier", "Tier"), ("user", "User"), ("sent", "Sent"), ("authorized", "Authorized"),
           ("limited", "Limited (429)"), ("rejected", "Rejected (401/403)"), ("errors", "Errors"),
           ("prompt_tokens", "Prompt tokens"), ("completion_tokens", "Completion tokens"),
           ("total_tokens", "Total tokens"), ("cost", "Cost")]
ALL_USERS = "(all users)"
NO_SCENARIO = ("No scenario: Locust's own controls (users, ramp up, run time, tier weights, pattern) drive the "
               "tier users")
STATIC = Path(__file__).with_name("static")
PAGE_TAGS = ('<link rel="stylesheet" href="./chargeback/static/chargeback.css">'
             '<script src="./chargeback/static/chargeback.js"></script>')
CHOICE_OPTIONS = ("tier_weights", "pattern", "duration", "users_per_identity")  # what choose_scenario reads
VERIFY_TIMEOUT = 600.0  # seconds the checks may take before the UI gives up on them
Baseline = dict[str, dict[str, Any]]  # user -> its row when the stats were reset
DEFAULT_TOP, MAX_TOP = 10, 100  # users per top list: by default, and at most (`?top=N`)
MAX_MATCHES = 50  # users a search shows at most (it says how many matched)
TIER_USERS_SHOWN = 10  # user names per tier in the tiers' table (it says how many there are)


def window_text(seconds: float) -> str:
    """A window as the manifests write it: 120 -> 2m, 10 -> 10s, 3600 -> 1h."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def limit_markers(summary: PlanSummary, user: str, authorized: int, span: float) -> list[dict[str, Any]]:
    """Per request rate that applies to `user`: how many calls it lets through in the windows the user's requests
    spanned (`span` seconds from the first to the last; a window opens at a request), and whether `authorized`
    is over that."""
    markers = []
    for rate in summary.rates_of(user)[0]:
        windows = int(span // rate.window) + 1
        rate_text, allowed = f"{rate.limit} per {window_text(rate.window)}", rate.limit * windows
        markers.append({"limit_name": rate.limit_name, "rate": rate_text, "windows": windows, "allowed": allowed,
                        "over": authorized > allowed,
                        "text": f"{authorized} / {rate_text}" if windows == 1
                        else f"{authorized} / {allowed} ({windows} windows of {rate_text})"})
    return markers


def since(users: list[dict[str, Any]], baseline: Baseline) -> list[dict[str, Any]]:
    """User rows less what they held at the reset; only users with requests since."""
    rows = []
    for row in users:
        base = baseline.get(row["user"])
        if base is not None:
            row = {**row, **{k: row[k] - base[k] for k in COUNTS}, "cost": round(row["cost"] - base["cost"], 6)}
        if row["sent"]:
            rows.append(row)
    return rows


def user_table(plan: Plan, ledger: Ledger, baseline: Baseline | None = None
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`Ledger.table`'s rows per user (by tier, then user) and per tier (user `(all users)`); with a baseline, what
    came since it."""
    users, tiers = ledger.table(plan)
    if baseline is not None:
        users = since(users, baseline)
        tiers = totals_by(users, "tier", COUNTS + ("cost",))
    return users, [{**total, "user": ALL_USERS, "cost": round(total["cost"], 6)} for total in tiers]


def model_totals(plan: Plan, ledger: Ledger, baseline: Baseline | None = None) -> list[dict[str, Any]]:
    """A row per tier and model (the requests'; "" when none was named): users, calls, tokens and cost at the
    model's price; with a baseline, what came since it (its rows' `models`)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for account in ledger.accounts.values():
        price = plan.tiers[account.tier].price if account.tier in plan.tiers else Price()
        before = ((baseline or {}).get(account.user) or {}).get("models", {})
        for model, counts in account.model_usage().items():
            calls, reports, prompt, completion, total = (
                a - b for a, b in zip(counts, before.get(model, [0] * len(MODEL_COUNTS))))
            if not (calls or reports):
                continue
            row = rows.setdefault((account.tier, model), {"tier": account.tier, "model": model, "users": 0,
                                                          **dict.fromkeys(MODEL_COUNTS, 0), "cost": 0.0})
            row["users"] += 1
            for name, value in zip(MODEL_COUNTS, (calls, reports, prompt, completion, total)):
                row[name] += value
            row["cost"] += price.for_model(model).cost(calls, total, prompt, completion)
    return [{**row, "cost": round(row["cost"], 6)} for _, row in sorted(rows.items())]


def with_markers(summary: PlanSummary, ledger: Ledger, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """User rows, each with its `limits` (limit markers over the span of all its requests in the ledger)."""
    marked = []
    for row in rows:
        account = ledger.accounts[row["user"]]
        span = (account.last or 0.0) - (account.first or 0.0)
        marked.append({**row, "limits": limit_markers(summary, row["user"], row["authorized"], span)})
    return marked


def top_users(users: list[dict[str, Any]], key: str, n: int) -> list[dict[str, Any]]:
    """The `n` users with the most `key` (more than 0), the most first; ties by user name. One pass: O(users log n)."""
    return heapq.nsmallest(n, (r for r in users if r[key] > 0), key=lambda r: (-r[key], r["user"]))


def search_users(users: list[dict[str, Any]], text: str, limit: int = MAX_MATCHES
                 ) -> tuple[int, list[dict[str, Any]]]:
    """How many users' names contain `text` (case-insensitive), and the first `limit` of them by name."""
    needle = text.casefold()
    found = [r for r in users if needle in r["user"].casefold()]
    return len(found), heapq.nsmallest(limit, found, key=lambda r: r["user"])


def top_count(value: str | None) -> int:
    """`?top=N`: a whole number, at least 1 and at most MAX_TOP; DEFAULT_TOP when missing or not a number."""
    try:
        return max(1, min(MAX_TOP, int(value or DEFAULT_TOP)))
    except ValueError:
        return DEFAULT_TOP


def table_json(plan: Plan, summary: PlanSummary, ledger: Ledger, baseline: Baseline | None = None,
               top: int = DEFAULT_TOP, search: str = "") -> dict[str, Any]:
    """The tab's table: `users` (how many have rows), `totals` (a row per tier), `top_sent` and `top_limited` (the
    `top` users by calls and by limited), and with `search`, `search` {text, matched, limit, rows} (the users whose
    name contains it); each user row shown with its limit markers; `models` (a row per tier and model). With a
    baseline, what came since it."""
    users, totals = user_table(plan, ledger, baseline)
    table: dict[str, Any] = {"users": len(users), "totals": totals, "models": model_totals(plan, ledger, baseline),
                             "top": top,
                             "top_sent": with_markers(summary, ledger, top_users(users, "sent", top)),
                             "top_limited": with_markers(summary, ledger, top_users(users, "limited", top)),
                             "search": None}
    if search:
        matched, rows = search_users(users, search)
        table["search"] = {"text": search, "matched": matched, "limit": MAX_MATCHES,
                           "rows": with_markers(summary, ledger, rows)}
    return table


def csv_rows(users: list[dict[str, Any]], totals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every user, each tier's users followed by its total row (user `(all users)`)."""
    by_tier: dict[str, list[dict[str, Any]]] = {}
    for row in users:
        by_tier.setdefault(row["tier"], []).append(row)
    return [row for total in totals for row in (*by_tier.get(total["tier"], ()), total)]


def csv_text(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[k for k, _ in COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def price_json(price: Price) -> dict[str, Any]:
    """The units a price sets (not 0), and `models` {model: its units} when the prices file names any."""
    units = {unit: amount for unit, amount in price.to_dict().items() if unit != "models" and amount}
    return {**units, "models": {m: price_json(p) for m, p in price.models}} if price.models else units


def tiers_json(summary: PlanSummary) -> list[dict[str, Any]]:
    """Each tier's users (the first TIER_USERS_SHOWN names, and how many), request and token limits, and prices."""
    limits = {l.name: l for l in summary.limits}
    return [{"name": name, "users": list(tier.users[:TIER_USERS_SHOWN]), "user_count": len(tier.users),
             "price": price_json(tier.price),
             "limits": [{"name": l.name, "kind": l.kind,
                         "rates": [f"{r.limit} per {window_text(r.window)}" for r in l.rates]}
                        for l in (limits[n] for n in tier.limits if n in limits)]}
            for name, tier in summary.tiers.items()]


def run_json(record: RunRecord | None) -> dict[str, Any] | None:
    """The run record the tab is about: id, scenario, state and why."""
    if record is None:
        return None
    meta = record.meta
    return {"id": meta["run_id"], "scenario": meta["scenario"], "state": meta["state"], "reason": meta["reason"]}


def scenario_choices(plan: Plan) -> list[dict[str, Any]]:
    """The picker's choices: none (Locust's controls), then each scenario with its simulated users and end, or why
    the Plan cannot run it."""
    choices: list[dict[str, Any]] = [{"name": "", "description": NO_SCENARIO, "users": None, "ends": "", "error": ""}]
    for scenario in SCENARIOS.values():
        try:
            users, error = len(scenario.slots(plan)), ""
        except ValueError as exc:
            users, error = None, str(exc)
        ends = (f"after {scenario.duration:g} s" if scenario.duration is not None
                else "when every simulated user has sent its requests")
        choices.append({"name": scenario.name, "description": scenario.description, "users": users, "ends": ends,
                        "error": error})
    return choices


@dataclass
class ChecksStatus:
    """The checks run from the UI on one run record: idle, running, done (results) or error (message)."""

    state: str = "idle"
    run_id: str = ""
    partial: bool = False  # the record is incomplete: reconciled for what it holds (--partial)
    exit_code: int | None = None
    message: str = ""
    results: list[CheckResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        counts = {o: sum(r.outcome == o for r in self.results) for o in ("passed", "failed", "skipped", "error")}
        return {**asdict(self), "counts": counts}


class Tab:
    """The server side of the tab: the reset baseline and the checks run from the UI."""

    def __init__(self, environment: Environment, run: Run):
        self.environment = environment
        self.run = run
        self.reset: tuple[Ledger, Baseline] | None = None  # the ledger at the last reset, and its users' rows then
        self.reset_at: float | None = None
        self.verification = ChecksStatus()

    def baseline(self) -> Baseline | None:
        """The users' rows at the last reset of the current run's ledger (None: no reset of this ledger)."""
        return self.reset[1] if self.reset is not None and self.reset[0] is self.run.ledger else None

    def table(self, top: int = DEFAULT_TOP, search: str = "") -> dict[str, Any]:
        """The tab's JSON since the last reset: the run, currency, tiers and `table_json`."""
        run = self.run
        return {"run": run_json(run.record), "currency": run.summary.currency, "reset_at": self.reset_at,
                "tiers": tiers_json(run.summary),
                **table_json(run.plan, run.summary, run.ledger, self.baseline(), top, search)}

    def totals(self) -> list[dict[str, Any]]:
        """The per-tier rows since the last reset (Locust's own table of the tab, which ours hides, gets these)."""
        return user_table(self.run.plan, self.run.ledger, self.baseline())[1]

    def csv(self) -> str:
        """The table file: every user since the last reset, each tier followed by its total."""
        return csv_text(csv_rows(*user_table(self.run.plan, self.run.ledger, self.baseline())))

    def on_reset(self, **_: Any) -> None:
        """Locust's reset button: the table starts again from here (the run record keeps everything)."""
        ledger = self.run.ledger
        users, _ = ledger.table(self.run.plan)
        usage = {user: account.model_usage() for user, account in ledger.accounts.items()}
        baseline = {r["user"]: {**r, "models": {m: list(c) for m, c in usage[r["user"]].items()}} for r in users}
        self.reset, self.reset_at = (ledger, baseline), time.time()
        if self.verification.state != "running":
            self.verification = ChecksStatus()

    def on_test_start(self, **_: Any) -> None:
        if self.verification.state != "running":
            self.verification = ChecksStatus()

    def on_test_stop(self, **_: Any) -> None:
        """With --check: verify the record once it is finished, if it is complete."""
        if self.environment.parsed_options.check:
            gevent.spawn(self._verify_when_finished)

    def _verify_when_finished(self) -> None:
        if self.run.finisher is not None:
            self.run.finisher.join()
        if self.run.record is not None and self.run.record.state == COMPLETE:
            self.start_verification()

    def start_verification(self) -> str:
        """Run the checks on the last run record in a greenlet; "" when started, else why not."""
        record = self.run.record
        if record is None:
            return "no run record yet: start a run first"
        if record.state == RUNNING:
            return f"run {record.meta['run_id']} is not finished yet"
        if self.verification.state == "running":
            return f"the checks are already running on {self.verification.run_id}"
        self.verification = ChecksStatus("running", record.meta["run_id"], record.state == INCOMPLETE)
        gevent.spawn(self._verify, record.path, self.verification, self.run.recorder.auth)
        return ""

    @staticmethod
    def _verify(path: Path, verification: ChecksStatus, auth: PrometheusAuth) -> None:
        try:
            code, results, output = check_results(path, *(["--partial"] if verification.partial else []),
                                                  timeout=VERIFY_TIMEOUT, auth=auth)
        except (OSError, subprocess.SubprocessError) as exc:  # pytest could not start, or timed out
            verification.state, verification.message = "error", f"the checks could not run: {exc}"
            return
        verification.exit_code, verification.results = code, results
        if code in (0, 1):
            verification.state = "done"
        else:
            lines = [line for line in output.splitlines() if line.strip()]
            verification.state, verification.message = "error", lines[-1] if lines else f"pytest exited {code}"


def register(environment: Environment, run: Run) -> None:
    """Add the tab, its data (inside /stats/requests, as Locust's UI expects), our routes and the page script."""
    web_ui = environment.web_ui
    if web_ui is None:
        return
    app = web_ui.app
    tab = Tab(environment, run)
    events = environment.events
    events.reset_stats.add_listener(tab.on_reset)
    events.test_start.add_listener(tab.on_test_start)
    events.test_stop.add_listener(tab.on_test_stop)
    web_ui.template_args.update(
        extended_tabs=[{"title": "Chargeback", "key": "chargeback"}],
        extended_tables=[{"key": "chargeback", "structure": [{"key": k, "title": t} for k, t in COLUMNS]}],
        extended_csv_files=[{"href": "/chargeback/csv", "title": "Download the chargeback table (CSV)"}],
    )

    @app.before_request
    def select_scenario() -> Response | None:
        """A new test's POST /swarm: its form's scenario first ("" for Locust's controls), with the form's values of
        the options that choice reads (Locust's swarm view sets them alike a moment later); Locust's answer on a
        ValueError. Editing a running test leaves the scenario alone."""
        if request.endpoint != "locust.swarm" or environment.runner.state in (STATE_SPAWNING, STATE_RUNNING):
            return None
        if web_ui.web_login and not current_user.is_authenticated:  # Locust's view refuses it
            return None
        options = environment.parsed_options
        if web_ui.userclass_picker_is_active and request.form.get("scenario"):
            return jsonify({"success": False, "host": environment.host, "message": (
                "a scenario decides its user classes itself: with --class-picker, choose no scenario")})
        try:
            for key in CHOICE_OPTIONS:
                if key in request.form:
                    setattr(options, key, type(getattr(options, key))(request.form[key]))
            choose_scenario(environment, request.form.get("scenario", ""))
        except ValueError as exc:
            return jsonify({"success": False, "message": str(exc), "host": environment.host})
        return None

    @app.after_request
    def extend(response: Response) -> Response:
        if request.endpoint == "locust.index" and response.mimetype == "text/html":
            response.set_data(response.get_data(as_text=True).replace("</body>", f"{PAGE_TAGS}</body>", 1))
        elif request.path == "/stats/requests" and response.is_json:
            data = response.get_json()
            data["extended_stats"] = [{"key": "chargeback", "data": tab.totals()}]
            response.set_data(json.dumps(data))
        return response

    @app.route("/chargeback/static/<path:name>")
    def chargeback_static(name: str) -> Response:
        return send_from_directory(STATIC, name, max_age=0)

    @app.route("/chargeback/table")
    @web_ui.auth_required_if_enabled
    def chargeback_table() -> Response:
        return jsonify(tab.table(top_count(request.args.get("top")), request.args.get("user", "").strip()))

    @app.route("/chargeback/scenarios")
    @web_ui.auth_required_if_enabled
    def chargeback_scenarios() -> Response:
        return jsonify({"selected": environment.parsed_options.scenario, "scenarios": scenario_choices(run.plan)})

    @app.route("/chargeback/verify", methods=["GET", "POST"])
    @web_ui.auth_required_if_enabled
    def chargeback_verify() -> Response:
        refused = tab.start_verification() if request.method == "POST" else ""
        return jsonify({**tab.verification.to_json(), "refused": refused})

    @app.route("/chargeback/csv")
    @web_ui.auth_required_if_enabled
    def chargeback_csv() -> Response:
        return Response(tab.csv(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=chargeback.csv"})
