"""The built-in checks at scale: past 200 users of a run, each per-user check runs once per tier over the tier's
users, so ten thousand identities make a few dozen tests; a batch fails naming every user that fails, and passes
only when every user passes. Run through the plugin, as `pytest --run` runs it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_plan import DEPLOY
from test_verify import A, L, series, snapshot

from chargeback.ledger import Ledger
from chargeback.plan import load_plan
from chargeback.pytest_plugin import check_results
from chargeback.record import RunRecord
from chargeback.summary import PlanSummary

TIERS = ("free", "premium", "enterprise")
USERS = 300  # 100 a tier


def api_keys(count: int) -> str:
    """`count` API-key Secrets, user u<i> in the demo's tiers in turn."""
    return "".join(
        f"---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: u{i}-apikey\n  namespace: llm\n  labels:\n"
        f"    authorino.kuadrant.io/managed-by: authorino\n    app: llm-gateway\n  annotations:\n"
        f"    kuadrant.io/groups: {TIERS[i % 3]}\n    secret.kuadrant.io/user-id: u{i}\n"
        f"stringData:\n  api_key: u{i}-key\ntype: Opaque\n" for i in range(count))


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> PlanSummary:
    policy = tmp_path_factory.mktemp("policy")
    (policy / "api-keys.yaml").write_text(api_keys(USERS))
    for name in ("auth-policy.yaml", "rate-limit-policy.yaml", "prices.yaml"):
        shutil.copy(DEPLOY / name, policy / name)
    return PlanSummary.of(load_plan([policy]))


def run(tmp_path: Path, plan: PlanSummary, extra_authorized: dict[str, int]) -> Path:
    """Each user sends 3 requests, a second apart, with no window open before (free: 2 authorized, 1 limited);
    the server's counters say the same, plus `extra_authorized`."""
    record = RunRecord.start(tmp_path, {"scenario": "soak", "limitador": {"before": {"counters": [],
                                                                                       "read": [99.0, 99.0]}}}, plan)
    ledger = Ledger()
    for identity in plan.identities:
        for n in range(3):
            status = 429 if identity.tier == "free" and n == 2 else 200
            ledger.record(identity.user, identity.tier, 100.0 + n, 100.01 + n, status)
    after = [series(kind, a.user, count + (extra_authorized.get(a.user, 0) if kind == A else 0), group=a.tier)
             for a in ledger.accounts.values() for kind, count in ((A, a.authorized), (L, a.limited))]
    record.snapshots = {"before": snapshot(), "after": snapshot(*after)}
    record.finish(ledger, complete=True)
    return record.path


def test_an_honest_gateway_passes_each_tiers_batch(tmp_path: Path, plan: PlanSummary) -> None:
    code, results, output = check_results(run(tmp_path, plan, {}))
    assert code == 0, output
    batched = [r.name for r in results if r.name.startswith("test_user_counters_match_the_ledger")]
    assert batched == [f"test_user_counters_match_the_ledger[tier {t}, 100 cases]" for t in sorted(TIERS)]
    assert len(results) == 27 and {r.outcome for r in results} == {"passed", "skipped"}  # 3 tiers x the headers


def test_one_mis_billed_user_fails_its_tiers_batch_naming_it(tmp_path: Path, plan: PlanSummary) -> None:
    code, results, output = check_results(run(tmp_path, plan, {"u3": 1, "u4": 2}))  # u3 free, u4 premium
    assert code == 1, output
    failed = {r.name: r.message for r in results if r.outcome == "failed"}
    counters = failed["test_user_counters_match_the_ledger[tier free, 100 cases]"]
    assert counters.startswith("1 of 100 cases fail:\n- u3: ") and "\nuser" in counters  # with u3's table
    assert failed["test_user_counters_match_the_ledger[tier premium, 100 cases]"].startswith(
        "1 of 100 cases fail:\n- u4: ")
    assert failed["test_policy_limit_held[tier free, 100 cases]"].startswith("1 of 100 cases fail:\n- u3: ")
    assert "test_user_counters_match_the_ledger[tier enterprise, 100 cases]" not in failed
    assert "test_policy_limit_held[tier premium, 100 cases]" not in failed  # 3 + 2 is within premium's 10
