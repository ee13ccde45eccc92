"""`python -m chargeback demo`: from nothing to a verdict in one command, on the local stand-in.

Starts the gateway and Prometheus, runs the `seed-demo` scenario with Locust (headless, counters snapshotted
before and after), runs the checks, prints the chargeback table, stops everything; exit 0 only if every check
passed.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .plan import load_plan
from .verify import Verification, format_table, gather

ROOT = Path(__file__).resolve().parent.parent


def chargeback_rows(v: Verification, prices_from: list[str]) -> tuple[list[dict], list[dict]]:
    """Per user and per tier: calls and limited as the server counted them, tokens as the client saw, cost."""
    plan = load_plan(prices_from)
    users, tiers = [], {}
    for check in v.users.values():
        tier = check.tier or check.client.tier
        price = plan.tiers[tier].price if tier in plan.tiers else None
        cost = price.cost(check.server_authorized, check.client.total_tokens) if price else 0.0
        users.append({"user": check.user, "tier": tier, "calls": check.server_authorized,
                      "limited": check.server_limited, "tokens": check.client.total_tokens, "cost": cost})
        total = tiers.setdefault(tier, {"tier": tier, "users": 0, "calls": 0, "limited": 0, "tokens": 0, "cost": 0.0})
        total["users"] += 1
        for key in ("calls", "limited", "tokens", "cost"):
            total[key] += users[-1][key]
    for row in users + list(tiers.values()):
        row["cost"] = f"{row['cost']:.4f}"
    return users, list(tiers.values())


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
        run = Path(runs_dir) / "latest"
        v = gather(run, schema=schema)
    users, tiers = chargeback_rows(v, policies)
    print(f"\nchargeback for {run.resolve().name} ({plan.currency}; calls and limited as the gateway counted them)\n")
    print(format_table(users) + "\n\n" + format_table(tiers))
    verdict = "PASS: every check passed" if code == 0 else f"FAIL: the checks failed (exit {code})"
    print(f"\n{verdict}; run record {run.resolve()}")
    return code
