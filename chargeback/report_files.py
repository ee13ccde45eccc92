"""Writing a Report: CSV (the seed's columns first), JSON, and one self-contained HTML page with SVG plots."""
from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

from .report import Report  # noqa: E402

plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 96})  # text stays text in the SVG
PLOTTED, LISTED = 8, 50  # users named in the plots and in the page's table (the CSV and JSON hold every user)
CSV_COLUMNS = ["timestamp", "user", "group", "calls", "cost", "sent", "authorized", "limited", "rejected",
               "prompt_tokens", "completion_tokens", "total_tokens", "reports", "source", "note"]
MODEL_COLUMNS = ["timestamp", "user", "group", "model", "calls", "reports", "prompt_tokens", "completion_tokens",
                 "total_tokens", "cost"]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def write_csv(report: Report, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for u in report.users:
            writer.writerow({**asdict(u), "timestamp": _iso(report.generated), "calls": u.authorized,
                             "cost": f"{u.cost:.6f}"})


def write_models_csv(report: Report, path: Path) -> None:
    """One row per user and model (the request's; "(server difference)" for calls only the server counted)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MODEL_COLUMNS)
        writer.writeheader()
        for u in report.users:
            for m in u.models:
                writer.writerow({**asdict(m), "timestamp": _iso(report.generated), "user": u.user, "group": u.group,
                                 "cost": f"{m.cost:.9f}"})


def write_json(report: Report, path: Path) -> None:
    path.write_text(json.dumps({
        "title": report.title, "source": report.source, "currency": report.currency,
        "generated": _iso(report.generated), "flags": report.flags,
        "users": [asdict(u) for u in report.users], "tiers": report.tiers(), "models": report.model_totals(),
    }, indent=1) + "\n")


def _svg(fig: plt.Figure) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _over_time(ax: plt.Axes, at: list[float], series: dict[str, tuple], title: str) -> None:
    """Authorized (solid) and limited (dashed, when any) calls so far, one colour per series."""
    for name, (authorized, limited) in series.items():
        line, = ax.step(at, authorized, where="post", label=f"{name} authorized")
        if limited.any():
            ax.step(at, limited, where="post", linestyle="--", color=line.get_color(), label=f"{name} limited")
    ax.set(title=title, xlabel="seconds from the start", ylabel="requests so far")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)


def _requests_over_time(report: Report) -> str:
    """Per tier, and for the users with the most calls (PLOTTED of them)."""
    curves = report.curves
    fig, (by_tier, by_user) = plt.subplots(2, 1, figsize=(9, 8))
    tiers = {t["group"]: curves.total([u.user for u in report.users if u.group == t["group"]]) for t in report.tiers()}
    _over_time(by_tier, curves.at, tiers, "Requests over time per tier (authorized vs limited)")
    top = {u.user: curves.users[u.user] for u in report.top(PLOTTED) if u.user in curves.users}
    _over_time(by_user, curves.at, top, f"Requests over time per user, the {len(top)} with the most calls "
                                        "(authorized vs limited)")
    fig.tight_layout()
    return _svg(fig)


def _per_tier(report: Report) -> str:
    tiers = report.tiers()
    names = [t["group"] for t in tiers]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([i - 0.2 for i in x], [t["authorized"] for t in tiers], width=0.4, label="authorized")
    ax.bar([i + 0.2 for i in x], [t["limited"] for t in tiers], width=0.4, label="limited")
    ax.set_xticks(list(x), names)
    ax.set(title="Authorized vs limited per tier", xlabel="tier", ylabel="requests")
    ax.legend()
    return _svg(fig)


def _cost(report: Report) -> str:
    tiers = report.tiers()
    fig, (by_tier, by_user) = plt.subplots(1, 2, figsize=(10, 4))
    by_tier.bar([t["group"] for t in tiers], [t["cost"] for t in tiers], color="tab:green", label="cost")
    by_tier.set(title="Cost per tier", xlabel="tier", ylabel=f"cost ({report.currency})")
    by_tier.legend()
    top = sorted(report.users, key=lambda u: (-u.cost, u.user))[:PLOTTED]
    by_user.bar([u.user for u in top], [u.cost for u in top], color="tab:olive", label="cost")
    by_user.set(title=f"Cost per user, the {len(top)} costliest", xlabel="user", ylabel=f"cost ({report.currency})")
    by_user.tick_params(axis="x", labelrotation=30)
    by_user.legend()
    return _svg(fig)


def _table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_html(report: Report, path: Path) -> None:
    flags = "".join(f"<li>{html.escape(f)}</li>" for f in report.flags)
    disagreements = (f'<h2 class="flags">Disagreements</h2><ul class="flags">{flags}</ul>' if flags
                     else "<p>No disagreement between the server and the client.</p>")
    source = f"Source: {html.escape(report.source)}. Generated {_iso(report.generated)}."
    top = report.top(LISTED)
    users = [asdict(u) for u in top]
    models = sorted(({"user": u.user, "group": u.group, **asdict(m)} for u in top for m in u.models),
                    key=lambda r: (r["model"], -r["calls"], r["user"]))
    listed = (f"All {len(report.users)} users." if len(users) == len(report.users) else
              f"The {len(users)} users with the most calls of {len(report.users)}; every user is in the CSV and JSON "
              "files beside this page.")
    path.write_text(f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(report.title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
.flags {{ color: #a00; }}
figure {{ margin: 1.5em 0; }}
</style></head><body>
<h1>{html.escape(report.title)}</h1>
<p>{source} Currency: {html.escape(report.currency)}.</p>
{disagreements}
<h2>Per tier</h2>
{_table(report.tiers(), ["group", "users", "authorized", "limited", "total_tokens", "cost"])}
<h2>Per user</h2>
<p>{listed}</p>
{_table(users, ["user", "group", "sent", "authorized", "limited", "rejected", "prompt_tokens", "completion_tokens",
                "total_tokens", "reports", "cost", "source", "note"])}
<h2>Per tier and model</h2>
{_table(report.model_totals(), ["group", "model", "users", "calls", "prompt_tokens", "completion_tokens",
                                "total_tokens", "cost"])}
<h2>Per model and user</h2>
<p>The users above, per model.</p>
{_table(models, ["model", "user", "group", "calls", "reports", "prompt_tokens", "completion_tokens", "total_tokens",
                 "cost"])}
<h2>Plots</h2>
<figure>{_requests_over_time(report)}</figure>
<figure>{_per_tier(report)}</figure>
<figure>{_cost(report)}</figure>
</body></html>
""")


def write_all(report: Report, out: Path, stem: str = "chargeback") -> list[Path]:
    """`<stem>.csv`, `<stem>.json`, `<stem>.html` and `<stem>-models.csv` in `out`; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.csv", out / f"{stem}.json", out / f"{stem}.html", out / f"{stem}-models.csv"]
    write_csv(report, paths[0])
    write_json(report, paths[1])
    write_html(report, paths[2])
    write_models_csv(report, paths[3])
    return paths
