"""The checks' own logic on synthetic data: a request cut off early widens reconciliation by one, a request the
limiter had decided must be counted, and nothing else widens it."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_plan import DEPLOY
from test_verify import A, L, series, snapshot

from chargeback import verdicts
from chargeback.expectations import Prior
from chargeback.ledger import NO_ANSWER, NOT_CONNECTED, Account, Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.summary import PlanSummary
from chargeback.verdicts import FAILS, HOLDS, NOT_APPLICABLE, UNDECIDED, Verdict
from chargeback.verify import Verification, verify

PLAN = PlanSummary.of(load_plan([DEPLOY]))


def start(tmp_path: Path, scenario: str, **meta: str) -> RunRecord:
    return RunRecord.start(tmp_path, {"scenario": scenario, **meta}, PLAN)


def failure(verdict: Verdict) -> str:
    """The title of a failing verdict (AssertionError if it does not fail)."""
    assert verdict.state == FAILS, verdict
    return verdict.title


def run_with_one_unanswered(tmp_path: Path, in_flight: float) -> RunRecord:
    """freeuser1: 2 authorized, 1 limited and 1 request stopped `in_flight` seconds after it was sent."""
    rec = start(tmp_path, "saturation")
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
    for found in (verdicts.user_counters_match_the_ledger(v.users["freeuser1"]),
                  verdicts.group_counters_match_the_ledger(v.groups["free"])):
        assert found.holds if verdict == "pass" else "count" in failure(found)


@pytest.mark.parametrize("slowest_429, in_flight, counted, verdict", [
    (3.0, 1.0, 0, "pass"),  # the gateway took 3 s to answer a 429: after 1 s it may not have reached the limiter
    (3.0, 1.0, 1, "pass"),
    (3.0, 3.5, 0, "too few"),  # in flight longer than any request took to reach the limiter, plus its timeout
    (3.0, 3.5, 1, "pass"),
    (0.01, 1.0, 0, "too few"),  # a gateway that keeps up: decided after 0.11 s
])
def test_an_unanswered_request_was_decided_only_after_the_slowest_answer_before_the_model(
        tmp_path: Path, slowest_429: float, in_flight: float, counted: int, verdict: str) -> None:
    rec = start(tmp_path, "saturation")
    ledger = Ledger()
    ledger.record("freeuser1", "free", 10.0, 10.01, 200)
    ledger.record("freeuser1", "free", 11.0, 11.01, 200)
    ledger.record("freeuser1", "free", 12.0, 12.0 + slowest_429, 429)
    ledger.record("freeuser1", "free", 16.0, 16.0 + in_flight, NO_ANSWER)
    rec.finish(ledger, complete=True)
    after = snapshot(series(A, "freeuser1", 2 + counted, group="free"), series(L, "freeuser1", 1, group="free"))
    found = verdicts.user_counters_match_the_ledger(verify(RunRecord.load(rec.path), snapshot(), after, resets={})
                                                    .users["freeuser1"])
    assert found.holds if verdict == "pass" else failure(found).startswith(
        "freeuser1: 1 call(s) that reached the limiter were not counted")


@pytest.mark.parametrize("authorized, passes", [(1, True), (2, False)])
def test_requests_rejected_by_auth_must_move_no_counter(tmp_path: Path, authorized: int, passes: bool) -> None:
    rec = start(tmp_path, "bad-keys")
    ledger = Ledger()
    ledger.record("freeuser1", "free", 10.0, 10.01, 200)
    ledger.record("freeuser1", "free", 11.0, 11.01, 401)
    rec.finish(ledger, complete=True)
    v = verify(RunRecord.load(rec.path), snapshot(), snapshot(series(A, "freeuser1", authorized, group="free")),
               resets={})
    found = verdicts.rejected_requests_moved_no_counter(v)
    assert found.holds if passes else failure(found).startswith(
        "freeuser1: the server counted more calls than reached the limiter; 1 request(s) were rejected by auth")


def evidence_of(tmp_path: Path, statuses: list[int]) -> Verification:
    """A run whose premiumuser1 requests got `statuses`, checked against counters that did not move."""
    rec = start(tmp_path, "seed-demo", gateway_url="http://gateway")
    ledger = Ledger()
    for n, status in enumerate(statuses):
        ledger.record("premiumuser1", "premium", 10.0 + n, 10.01 + n, status)
    rec.finish(ledger, complete=True)
    return verify(RunRecord.load(rec.path), snapshot(), snapshot(), resets={}, schema_name="seed")


def test_no_pass_without_evidence_that_traffic_reached_the_limiter(tmp_path: Path) -> None:
    unreachable = evidence_of(tmp_path / "a", [NOT_CONNECTED] * 3)
    assert failure(verdicts.gateway_answered(unreachable)) == (
        "none of the run's 3 requests got an answer: the gateway at http://gateway was unreachable")
    wrong_keys = evidence_of(tmp_path / "b", [401] * 3)
    assert verdicts.gateway_answered(wrong_keys).holds
    assert failure(verdicts.valid_keys_reached_the_limiter(wrong_keys)) == (
        f"every request of premiumuser1 got 401: the keys in the manifests ({DEPLOY}) are not the gateway's")
    cut_off = evidence_of(tmp_path / "c", [200, NO_ANSWER])
    client = cut_off.users["premiumuser1"].client
    client.columns = Account(client.user, client.tier).columns
    client.add(10.0, 10.05, NO_ANSWER, 0)
    client.add(11.0, 11.01, 403, 0)
    assert failure(verdicts.valid_keys_reached_the_limiter(cut_off)) == (
        "no request of the Plan's valid identities reached the limiter (statuses: 1 x 0, 1 x 403)")
    assert verdicts.valid_keys_reached_the_limiter(evidence_of(tmp_path / "d", [401, 200])).holds


def free_user_run(tmp_path: Path, statuses: list[int], authorized: int, limited: int, **labels: str) -> Verification:
    """freeuser1 (2 per 120 s, no window open before) got `statuses` one after another; the server counted
    `authorized` and `limited` under `labels`."""
    rec = start(tmp_path, "seed-demo")
    ledger = Ledger()
    for n, status in enumerate(statuses):
        ledger.record("freeuser1", "free", 100.0 + n, 100.01 + n, status)
    rec.finish(ledger, complete=True)
    labels = labels or {"group": "free"}
    after = snapshot(series(A, "freeuser1", authorized, **labels), series(L, "freeuser1", limited, **labels), at=200.0)
    return verify(RunRecord.load(rec.path), snapshot(), after, resets={},
                  priors={"freeuser1": Prior.fresh(PLAN.rates_of("freeuser1")[0], 0.0)})


def test_the_limit_and_the_answers_hold_only_as_the_policy_allows(tmp_path: Path) -> None:
    honest = free_user_run(tmp_path / "a", [200, 200, 429], 2, 1).users["freeuser1"]
    rate = honest.rates[0]
    assert [verdicts.policy_limit_held(honest, rate).state, verdicts.answers_follow_the_policy(honest).state] == [
        HOLDS, HOLDS]
    over = free_user_run(tmp_path / "b", [200, 200, 200], 3, 0).users["freeuser1"]
    assert failure(verdicts.policy_limit_held(over, rate)) == (
        "freeuser1: the limit free-user-requests (2 per 120 s) did not hold: the client got 3 answer(s) past the "
        "limiter and the server counted 3 authorized, but over the run's timeline the policy lets at most 2 through "
        "(1 window(s))")
    assert failure(verdicts.answers_follow_the_policy(over)).startswith(
        "freeuser1: request 3 (sent ") and "free-user-requests" in failure(verdicts.answers_follow_the_policy(over))
    early = free_user_run(tmp_path / "c", [429], 0, 1).users["freeuser1"]
    assert failure(verdicts.answers_follow_the_policy(early)).endswith(
        "got Kuadrant's 429, but every limit had room in every possible world (state before the run: no window "
        "open before the run)")


def test_counts_match_the_window_model_exactly_or_say_why_they_cannot(tmp_path: Path) -> None:
    v = free_user_run(tmp_path / "a", [200, 200, 429], 2, 1)
    assert verdicts.counts_match_the_window_model(v.users["freeuser1"], v).holds
    v = free_user_run(tmp_path / "b", [200, 200, 429], 2, 0)
    assert failure(verdicts.counts_match_the_window_model(v.users["freeuser1"], v)) == (
        "freeuser1: the window model expects 2 authorized / 1 limited")
    v.after.covers = (50.0, 60.0)  # read before the last answer (102.01)
    assert verdicts.counts_match_the_window_model(v.users["freeuser1"], v) == Verdict(
        UNDECIDED, "cannot decide: the counters were last read before the run's last answer")


def test_a_user_is_billed_under_the_plans_group_or_the_verdict_names_the_group(tmp_path: Path) -> None:
    assert verdicts.billed_under_the_plans_group(free_user_run(tmp_path / "a", [200], 1, 0).users["freeuser1"]).holds
    wrong = free_user_run(tmp_path / "b", [200], 1, 0, group="premium").users["freeuser1"]
    assert failure(verdicts.billed_under_the_plans_group(wrong)) == (
        "freeuser1: billed under group premium, but the Plan puts the user in free")


def test_strangers_and_token_counters(tmp_path: Path) -> None:
    rec = start(tmp_path, "seed-demo")
    rec.finish(Ledger(), complete=True)
    v = verify(RunRecord.load(rec.path), snapshot(), snapshot(series(A, "mallory", 2.0, group="free")), resets={},
               schema_name="seed")
    assert failure(verdicts.no_series_for_identities_outside_the_plan(v)) == (
        "series for users that are not identities of the Plan")
    assert verdicts.token_counters_match_the_ledger(v.users["mallory"]) == Verdict(
        NOT_APPLICABLE, "mallory: no token counters to compare")
    check = v.users["mallory"]
    check.server_tokens = 7
    assert failure(verdicts.token_counters_match_the_ledger(check)) == "mallory: the server counted other token hits"
    assert verdicts.token_counters_match_the_ledger(check).rows[0]["difference"] == 7
