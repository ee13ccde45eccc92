"""The checks' own logic on synthetic data: a request cut off early widens reconciliation by one, a request the
limiter had decided must be counted, and nothing else widens it."""
from __future__ import annotations

from pathlib import Path

import pytest

from chargeback.ledger import NO_ANSWER, NOT_CONNECTED, Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.verify import Verification, verify
from checks.test_auth import test_rejected_requests_moved_no_counter as rejected_moved_nothing
from checks.test_reconciliation import test_group_counters_match_the_ledger as group_matches
from checks.test_evidence import test_the_gateway_answered as gateway_answered
from checks.test_evidence import test_valid_keys_reached_the_limiter as valid_keys_reached
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
    for check in (lambda: user_matches(v, "freeuser1"), lambda: group_matches(v, "free")):
        if verdict == "pass":
            check()
        else:
            with pytest.raises(pytest.fail.Exception, match="count"):
                check()


@pytest.mark.parametrize("authorized, passes", [(1, True), (2, False)])
def test_requests_rejected_by_auth_must_move_no_counter(tmp_path: Path, authorized: int, passes: bool) -> None:
    rec = RunRecord.start(tmp_path, {"scenario": "bad-keys", "plan": load_plan([DEPLOY]).describe()})
    ledger = Ledger()
    ledger.record("freeuser1", "free", 10.0, 10.01, 200)
    ledger.record("freeuser1", "free", 11.0, 11.01, 401)
    rec.finish(ledger, complete=True)
    v = verify(RunRecord.load(rec.path), snapshot(), snapshot(series(A, "freeuser1", authorized, group="free")),
               resets={})
    if passes:
        rejected_moved_nothing(v)
    else:
        with pytest.raises(pytest.fail.Exception, match=r"^freeuser1: the server counted more calls than reached the "
                                                        r"limiter; 1 request\(s\) were rejected by auth"):
            rejected_moved_nothing(v)


def evidence_of(tmp_path: Path, statuses: list[int]) -> Verification:
    """A run whose premiumuser1 requests got `statuses`, checked against counters that did not move."""
    rec = RunRecord.start(tmp_path, {"scenario": "seed-demo", "plan": load_plan([DEPLOY]).describe(),
                                     "gateway_url": "http://gateway"})
    ledger = Ledger()
    for n, status in enumerate(statuses):
        ledger.record("premiumuser1", "premium", 10.0 + n, 10.01 + n, status)
    rec.finish(ledger, complete=True)
    return verify(RunRecord.load(rec.path), snapshot(), snapshot(), resets={}, schema_name="seed")


def test_no_pass_without_evidence_that_traffic_reached_the_limiter(tmp_path: Path) -> None:
    unreachable = evidence_of(tmp_path / "a", [NOT_CONNECTED] * 3)
    with pytest.raises(pytest.fail.Exception, match=r"^none of the run's 3 requests got an answer: the gateway at "
                                                    r"http://gateway was unreachable$"):
        gateway_answered(unreachable)
    wrong_keys = evidence_of(tmp_path / "b", [401] * 3)
    gateway_answered(wrong_keys)
    with pytest.raises(pytest.fail.Exception, match=r"^every request of premiumuser1 got 401: the keys in the "
                                                    r"manifests \(.*deploy/kuadrant\) are not the gateway's$"):
        valid_keys_reached(wrong_keys)
    cut_off = evidence_of(tmp_path / "c", [200, NO_ANSWER])
    cut_off.users["premiumuser1"].client.timeline[:] = [(10.0, 10.05, NO_ANSWER, 0), (11.0, 11.01, 403, 0)]
    with pytest.raises(pytest.fail.Exception, match=r"^no request of the Plan's valid identities reached the "
                                                    r"limiter \(statuses: 1 x 0, 1 x 403\)$"):
        valid_keys_reached(cut_off)
    valid_keys_reached(evidence_of(tmp_path / "d", [401, 200]))
