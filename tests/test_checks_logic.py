"""The checks' own logic on synthetic data: requests that got no answer widen reconciliation by exactly their
number, and nothing else does."""
from __future__ import annotations

from pathlib import Path

import pytest

from chargeback.ledger import TRANSPORT_ERROR, Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.verify import verify
from checks.test_auth import test_rejected_requests_moved_no_counter as rejected_moved_nothing
from checks.test_reconciliation import test_group_counters_match_the_ledger as group_matches
from checks.test_reconciliation import test_user_counters_match_the_ledger as user_matches
from test_plan import DEPLOY
from test_verify import A, L, series, snapshot


def run_with_one_unanswered(tmp_path: Path) -> RunRecord:
    """freeuser1: 2 authorized, 1 limited and 1 request stopped before its answer."""
    rec = RunRecord.start(tmp_path, {"scenario": "saturation", "plan": load_plan([DEPLOY]).describe()})
    ledger = Ledger()
    for n, status in enumerate((200, 200, 429, TRANSPORT_ERROR)):
        ledger.record("freeuser1", "free", 10.0 + n, 10.5 + n, status)
    rec.finish(ledger, complete=True)
    return RunRecord.load(rec.path)


@pytest.mark.parametrize("authorized, limited, passes", [
    (2, 1, True), (2, 2, True), (3, 1, True),  # the unanswered request counted nowhere, as limited, as authorized
    (3, 2, False), (2, 3, False), (1, 1, False),  # counted twice, two extra limited, one authorized missing
])
def test_unanswered_requests_widen_reconciliation_by_their_number(tmp_path: Path, authorized: int, limited: int,
                                                                   passes: bool) -> None:
    after = snapshot(series(A, "freeuser1", authorized, group="free"), series(L, "freeuser1", limited, group="free"))
    v = verify(run_with_one_unanswered(tmp_path), snapshot(), after, resets={})
    for check in (lambda: user_matches(v, "freeuser1"), lambda: group_matches(v, "free"),
                  lambda: rejected_moved_nothing(v)):
        if passes:
            check()
        else:
            with pytest.raises(pytest.fail.Exception, match="counted"):
                check()
