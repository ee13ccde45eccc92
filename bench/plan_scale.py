"""How long the suite takes to read a Plan of many API keys, and what it costs per identity.

Run from the repository root: `python bench/plan_scale.py [--identities 10000]`. It writes that many API-key
Secrets (one generated manifest file, the demo's tiers in turn) beside the demo's AuthPolicy, RateLimitPolicy and
prices, then times, in one process: reading the Plan (`load_plan`), its summary for the run record
(`PlanSummary.of`) and the slots of the `saturation` scenario over every identity.
"""
from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gateway_speed import parse_count, run_in_workdir

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chargeback.plan import load_plan  # noqa: E402
from chargeback.summary import PlanSummary  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402

T = TypeVar("T")
TIERS = ("free", "premium", "enterprise")
POLICIES = ("auth-policy.yaml", "rate-limit-policy.yaml", "prices.yaml")


def secrets_manifest(count: int) -> str:
    """`count` API-key Secrets, user u<i> in the demo's tiers in turn."""
    return "".join(
        f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: u{i}-apikey\n  namespace: llm\n  labels:\n"
        f"    authorino.kuadrant.io/managed-by: authorino\n    app: llm-gateway\n  annotations:\n"
        f"    kuadrant.io/groups: {TIERS[i % len(TIERS)]}\n    secret.kuadrant.io/user-id: u{i}\n"
        f"stringData:\n  api_key: u{i}-bench-key\ntype: Opaque\n" for i in range(count))


def write_policy(folder: Path, count: int) -> Path:
    """`folder` with `count` API-key Secrets beside the demo's AuthPolicy, RateLimitPolicy and prices."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "api-keys.yaml").write_text(secrets_manifest(count))
    for name in POLICIES:
        shutil.copy(REPO_ROOT / "deploy" / "kuadrant" / name, folder / name)
    return folder


def timed(label: str, count: int, work: Callable[[], T]) -> T:
    """Run `work()`, print its seconds and microseconds per identity; its result."""
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    print(f"{label:<40} {seconds:8.2f} s  {seconds / count * 1e6:8.0f} us per identity", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    count = parse_count(argv, __doc__, "--identities", 10_000, "API-key Secrets to generate (default 10000)")

    def body(workdir: Path) -> None:
        write_policy(workdir, count)
        plan = timed(f"load_plan ({count} identities)", count, lambda: load_plan([workdir]))
        if len(plan.identities) != count or not all(i.known and i.allowed for i in plan.identities):
            raise RuntimeError(f"the Plan has {len(plan.identities)} identities, not {count} valid ones")
        timed("PlanSummary.of (the run record's Plan)", count, lambda: PlanSummary.of(plan))
        slots = timed("saturation scenario's slots", count, lambda: SCENARIOS["saturation"].slots(plan))
        print(f"{len(slots)} slots over {len(plan.identities)} identities in {len(plan.tiers)} tiers")

    return run_in_workdir("plan-scale-", body)


if __name__ == "__main__":
    sys.exit(main())
