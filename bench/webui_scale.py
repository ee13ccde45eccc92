"""How long the web UI's Chargeback tab takes to build its table with many identities, per refresh.

Run from the repository root: `python bench/webui_scale.py [--identities 10000]`. It writes that many API-key Secrets
with `plan_scale.py`'s generator (the demo's tiers in turn) beside the demo's policies and prices, loads the Plan,
fills a ledger with requests of every identity (user i sends 1 + i % 5 answered requests and i % 4 limited ones),
then times, in one process, what the routes call: the tab's JSON (`Tab.table`, then `json.dumps`) with the default
top 10, with top 100, with a search, and after a reset; Locust's /stats/requests extension (`Tab.totals`); and the
CSV of every user (`Tab.csv`); and for comparison, every user's row with its limit markers as JSON (what the tab
served before, once a second). Each figure is the median of several calls, with the smallest, and the bytes served.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"  # nothing here needs gevent's patching (and ssl is imported already)

from gateway_speed import parse_count, run_in_workdir  # noqa: E402
from plan_scale import POLICIES, secrets_manifest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chargeback.ledger import Ledger  # noqa: E402
from chargeback.plan import Plan, load_plan  # noqa: E402
from users.run import Run  # noqa: E402
from users.webui import Tab, user_table, with_markers  # noqa: E402

REPEATS = 7
T0 = 1_800_000_000.0
USAGE = (12, 20, 32)  # prompt, completion, total tokens of an answered request


def fill(ledger: Ledger, plan: Plan) -> int:
    """Every identity's requests, one a second; how many were recorded."""
    recorded = 0
    for i, identity in enumerate(plan.identities):
        for k in range(1 + i % 5):
            ledger.record(identity.user, identity.tier, T0 + k, T0 + k + 0.05, 200, USAGE)
        for k in range(i % 4):
            ledger.record(identity.user, identity.tier, T0 + 10 + k, T0 + 10.01 + k, 429)
        recorded += 1 + i % 5 + i % 4
    return recorded


def timed(label: str, work: Callable[[], Any], served: Callable[[Any], str] | None = None) -> Any:
    """Call `work()` REPEATS times; print the median and smallest milliseconds (and the size of what it serves)."""
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = work()
        seconds.append(time.perf_counter() - start)
    size = f"  {len(served(result).encode()):>11,} bytes" if served else ""
    print(f"{label:<52} {statistics.median(seconds) * 1e3:8.1f} ms median  {min(seconds) * 1e3:8.1f} ms min{size}",
          flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    count = parse_count(argv, __doc__, "--identities", 10_000, "API-key Secrets to generate (default 10000)")

    def body(workdir: Path) -> None:
        (workdir / "api-keys.yaml").write_text(secrets_manifest(count))
        for name in POLICIES:
            shutil.copy(REPO_ROOT / "deploy" / "kuadrant" / name, workdir / name)
        start = time.perf_counter()
        plan = load_plan([workdir])
        run = Run(plan)
        requests = fill(run.ledger, plan)
        print(f"{len(plan.identities)} identities in {len(plan.tiers)} tiers, {requests} requests in the ledger "
              f"(Plan, summary and ledger built in {time.perf_counter() - start:.1f} s); {REPEATS} calls each:",
              flush=True)
        if len(run.ledger.accounts) != count:
            raise RuntimeError(f"the ledger has {len(run.ledger.accounts)} users, not {count}")
        tab = Tab(None, run)  # type: ignore[arg-type]  # (the environment is only read when a test stops)
        timed("Ledger.table (every user's row; inside all below)", lambda: run.ledger.table(plan))
        table = timed("/chargeback/table: Tab.table() + json.dumps", lambda: json.dumps(tab.table()), str)
        shown = json.loads(table)
        print(f"  top by calls {shown['top_sent'][0]['user']} ({shown['top_sent'][0]['sent']} sent), by limited "
              f"{shown['top_limited'][0]['user']} ({shown['top_limited'][0]['limited']}), {shown['users']} users, "
              f"{len(shown['totals'])} tiers")
        timed("/chargeback/table?top=100", lambda: json.dumps(tab.table(top=100)), str)
        found = timed("/chargeback/table?user=u99 (search)", lambda: json.dumps(tab.table(search="u99")), str)
        print(f"  u99: {json.loads(found)['search']['matched']} users match, "
              f"{len(json.loads(found)['search']['rows'])} shown")
        timed("/stats/requests extension: Tab.totals()", tab.totals, lambda rows: json.dumps(rows))
        csv = timed("/chargeback/csv: Tab.csv() (every user)", tab.csv, str)
        print(f"  {len(csv.splitlines()) - 1} CSV rows (users and tier totals)")
        timed("for comparison: every user's row with its markers", lambda: json.dumps(
            with_markers(run.summary, run.ledger, user_table(plan, run.ledger)[0])), str)
        tab.on_reset()
        for identity in plan.identities[:100]:
            run.ledger.record(identity.user, identity.tier, T0 + 60, T0 + 60.05, 200, USAGE)
        after = timed("/chargeback/table after a reset (100 users since)", lambda: json.dumps(tab.table()), str)
        print(f"  {json.loads(after)['users']} users since the reset")

    return run_in_workdir("webui-scale-", body)


if __name__ == "__main__":
    sys.exit(main())
