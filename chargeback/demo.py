"""`python -m chargeback demo`: from nothing to a verdict in one command, on the local stand-in.

Starts the gateway and Prometheus, runs the `seed-demo` scenario with Locust (headless, counters snapshotted
before and after), runs the checks, prints the chargeback table, writes the report, stops everything; exit 0
only if every check passed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .plan import load_plan
from .report import Report, from_run
from .report_files import write_all
from .verify import format_table

ROOT = Path(__file__).resolve().parent.parent


def chargeback_tables(report: Report) -> str:
    """The per-user and per-tier chargeback tables as text."""
    users = [{"user": u.user, "tier": u.group, "calls": u.authorized, "limited": u.limited, "tokens": u.total_tokens,
              "cost": f"{u.cost:.4f}"} for u in report.users]
    tiers = [{"tier": t["group"], "users": t["users"], "calls": t["authorized"], "limited": t["limited"],
              "tokens": t["total_tokens"], "cost": f"{t['cost']:.4f}"} for t in report.tiers()]
    return format_table(users) + "\n\n" + format_table(tiers)


def run_demo(policies: list[str], schema: str = "seed", runs_dir: str = "runs") -> int:
    """Stand-in up, seed-demo through Locust with --check, chargeback table; Locust's exit code (the checks')."""
    from sim.stack import LocalStack  # only the local-stack commands start the sim

    plan = load_plan(policies)
    print("starting the local stand-in (gateway + model simulator + Prometheus) ...", flush=True)
    with LocalStack(policies, schema=schema) as stack:
        print(f"gateway {stack.gateway_url}, prometheus {stack.prometheus_url}; running seed-demo with Locust ...",
              flush=True)
        command = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless", "--only-summary",
                   "--loglevel", "WARNING", "-H", stack.gateway_url, "--scenario", "seed-demo", "--runs-dir", runs_dir,
                   "--prometheus-url", stack.prometheus_url, "--check"]
        command += [arg for policy in policies for arg in ("--policy", policy)]
        locust = subprocess.run(command, stderr=subprocess.PIPE, text=True)  # the checks' output passes through
        if locust.returncode and "Traceback" in locust.stderr or not (Path(runs_dir) / "latest").exists():
            print(locust.stderr[-3000:], file=sys.stderr)
        code = locust.returncode
        run = (Path(runs_dir) / "latest").resolve()
        report = from_run(str(run), {}, {})
    print(f"\nchargeback for {run.name} ({plan.currency}; {report.source})\n")
    print(chargeback_tables(report))
    paths = write_all(report, run / "report")
    verdict = "PASS: every check passed" if code == 0 else f"FAIL: the checks failed (exit {code})"
    print(f"\n{verdict}; run record {run}\nreport: {paths[2]} (also .csv, -models.csv, .json)")
    return code
