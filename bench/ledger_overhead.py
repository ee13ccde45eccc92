"""Requests/s of the project's tier users compared with a bare FastHttpUser, both at max rate against a static nginx.

Run from the repository root: `python bench/ledger_overhead.py [--seconds 5]`. nginx is pinned to CPU 0 and
Locust to CPU 1 (`taskset`), so both figures are "one Locust core loading a server that is not the bottleneck".
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway_speed import (
    BENCH_DIR,
    CONNECTIONS,
    LOAD_CPU,
    SERVER_CPU,
    base_url,
    check_prerequisites,
    nginx,
    parse_count,
    run_in_workdir,
    run_locust,
    run_locust_csv,
    running,
)

REPO_ROOT = BENCH_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chargeback.record import RecordError, RunRecord  # noqa: E402

SCENARIO = "bench-max-rate"  # registered by bench/locust_tiers.py
SECONDS_ENV = "LEDGER_BENCH_SECONDS"  # the scenario's duration, read by bench/locust_tiers.py
TARGET_RATIO = 0.9


@dataclass(frozen=True)
class TierRun:
    """The tier users' Locust figures and what their run record says."""

    requests_per_second: float  # from the --csv stats, like the bare figure
    requests: int  # the final count, from --json-file: Locust rewrites the CSV every second, not at exit
    simulated_users: int
    state: str
    accounts: int
    ledger_sent: int
    ledger_tokens: int  # total_tokens: the tier users parsed `usage` from every answer when this is 22 × sent


def run_tiers(url: str, workdir: Path, seconds: int) -> TierRun:
    """bench/locust_tiers.py's max-rate scenario for `seconds`; its Locust figures and its run record's ledger."""
    runs, final = workdir / "runs", workdir / "tiers-final"
    rate = run_locust_csv(["-f", str(BENCH_DIR / "locust_tiers.py"), "--headless", "-H", url, "--scenario", SCENARIO,
                           "--runs-dir", str(runs), "--only-summary", "--json-file", str(final)],
                          workdir / "tiers", seconds, env={**os.environ, SECONDS_ENV: str(seconds)})
    latest = runs / "latest"
    try:
        entries = json.loads(Path(f"{final}.json").read_text())
        record = RunRecord.load(latest)
    except (OSError, json.JSONDecodeError, RecordError) as exc:
        raise RuntimeError(f"tier run: {exc}") from None
    accounts = record.ledger.accounts.values()
    return TierRun(rate, sum(entry["num_requests"] for entry in entries), record.meta["simulated_users"],
                   record.state, len(accounts), sum(a.sent for a in accounts), sum(a.total_tokens for a in accounts))


def report(bare: float, tiers: TierRun) -> None:
    """Print both rates, the ratio and the ledger check."""
    rows = {f"bare FastHttpUser (bench/locust_bare.py, {CONNECTIONS} users)": bare,
            f"tier users (bench/locust_tiers.py, {tiers.simulated_users} users)": tiers.requests_per_second}
    width = max(map(len, rows))
    for label, rate in rows.items():
        print(f"{label.ljust(width)}  {rate:10.1f} requests/s")
    ratio = tiers.requests_per_second / bare
    below = "  BELOW TARGET" if ratio < TARGET_RATIO else ""
    print(f"tier users / bare FastHttpUser = {ratio:.2f} (target >= {TARGET_RATIO}){below}")
    same = "=" if tiers.ledger_sent == tiers.requests else "!="
    print(f"ledger sent {tiers.ledger_sent} over {tiers.accounts} accounts {same} Locust requests {tiers.requests}; "
          f"total_tokens {tiers.ledger_tokens}; run record {tiers.state}")


def main(argv: list[str] | None = None) -> int:
    seconds = parse_count(argv, __doc__, "--seconds", 5, "duration of each load run (default 5)")

    def body(workdir: Path) -> None:
        check_prerequisites(("nginx", "taskset"))
        print(f"{seconds}s per run; nginx (1 worker, static completion) on CPU {SERVER_CPU}, "
              f"Locust on CPU {LOAD_CPU}, no wait", flush=True)
        with running(nginx(workdir)) as server:
            bare = run_locust(base_url(server), workdir, seconds)
            tiers = run_tiers(base_url(server), workdir, seconds)
        report(bare, tiers)
        if tiers.ledger_sent != tiers.requests:
            raise RuntimeError(f"the ledger counted {tiers.ledger_sent} requests sent, Locust {tiers.requests}")

    return run_in_workdir("ledger-overhead-", body)


if __name__ == "__main__":
    sys.exit(main())
