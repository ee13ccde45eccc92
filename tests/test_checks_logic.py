"""The checks' own logic on synthetic data: a request cut off early widens reconciliation by one, a request the
limiter had decided must be counted, and nothing else widens it."""
from __future__ import annotations

from pathlib import Path

import pytest

from chargeback.ledger import NO_ANSWER, Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.verify import verify
from checks.test_auth import test_rejected_requests_moved_no_counter as rejected_moved_nothing
from checks.test_reconciliation import test_group_counters_match_the_ledger as group_matches
from checks.test_reconciliation import test_user_counters_match_the_ledger as user_matches
from test_plan import DEPLOY
from test_verify import A, L, series, snapshot


def run_with_one_unanswered(tmp_path: Path, in_flight: float) -> RunRecord:
    """freeuser1: 2 authorized, 1 limited and 1 request stopped `in_flight` seconds after it was sent."""
    rec = RunRecord.start(tmp_path, {"scenario": "saturation", "plan": load_plan([DEPLOY]).describe()})
    ledger = Ledger()
    for n, status in enumerate((200, 200, 429)):
        ledger.record("freeuser1", "free", 10.0 + n, 10.01 + n, status)
    ledger.record("freeuser1", "free", 13.0, 13.0 + in_flight, NO_ANSWER)
    rec.finish(ledger, complete=True)
    return RunRecord.load(rec.path)


@pytest.mark.parametrize("in_flight, authorized, limited, verdict", [
    (0.05, 2, 1, "pass"), (0.05, 2, 2, "pass"), (0.05, 3, 1, "pass"),  # cut off early: not counted, limited, authorized
    (0.05, 3, 2, "too many"), (0.05, 2, 3, "too many"),  # counted twice, two extra limited
    (0.05, 1, 1, "too few"), (5.0, 2, 1, "too few"),  # one authorized missing; the request in flight for 5 s, which
    (5.0, 3, 1, "pass"), (5.0, 2, 2, "pass"),  # the limiter had decided, not counted
])
def test_unanswered_requests_widen_reconciliation_only_as_far_as_they_may(tmp_path: Path, in_flight: float,
                                                                          authorized: int, limited: int,
                                                                          verdict: str) -> None:
    after = snapshot(series(A, "freeuser1", authorized, group="free"), series(L, "freeuser1", limited, group="free"))
    v = verify(run_with_one_unanswered(tmp_path, in_flight), snapshot(), after, resets={})
    reconciliation = [lambda: user_matches(v, "freeuser1"), lambda: group_matches(v, "free")]
    auth = [lambda: rejected_moved_nothing(v)]
    failing = {"pass": [], "too few": reconciliation, "too many": reconciliation + auth}
    for check in reconciliation + auth:
        if check in failing[verdict]:
            with pytest.raises(pytest.fail.Exception, match="count"):
                check()
        else:
            check()
