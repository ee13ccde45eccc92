"""The overshoot measurement on synthetic timelines: requests in flight at once, overshoot groups found by the window
model, and the verdicts that pass an overshoot within what was in flight (saying so) and fail it when strict."""
from __future__ import annotations

import pytest

from chargeback import verdicts
from chargeback.expectations import Overshoot, Prior, explain_overshoot, in_flight_at_once
from chargeback.ledger import Account, Timeline
from chargeback.plan import Rate
from chargeback.verify import UserCheck
from sim.limiter import CounterSpec, Limiter

RATES = [Rate("free-user-requests", 2, 120.0)]
LIMIT = "free-user-requests (2 per 120 s)"
BURST = [(1.0, 1.1, "A", 0), (2.0, 2.2, "A", 1), (2.01, 2.2, "A", 2), (2.02, 2.2, "A", 3), (3.0, 3.1, "L", 0)]


@pytest.mark.parametrize("requests, at_once", [
    ([], 0), ([(1.0, 2.0, "A", 0), (2.0, 3.0, "A", 0)], 1),  # an answer and the next send at one moment: 1
    ([(1.0, 3.0, "A", 0), (1.5, 2.0, "A", 1), (2.5, 4.0, "A", 2)], 2), (BURST, 3),
])
def test_in_flight_at_once_is_the_most_overlapping_requests(requests: list, at_once: int) -> None:
    assert in_flight_at_once(Timeline.of(requests)) == at_once


def test_a_burst_past_the_room_is_an_overshoot_and_the_rest_is_still_followed() -> None:
    explanation, found = explain_overshoot(Timeline.of(BURST), RATES, Prior.fresh(RATES, 0.0))
    assert (explanation.consistent, found) == (True, (Overshoot(2, 4, 2, 3, (LIMIT,)),))
    explanation, found = explain_overshoot(Timeline.of(BURST + [(5.0, 5.1, "A", 0)]), RATES, Prior.fresh(RATES, 0.0))
    assert (explanation.consistent, explanation.unexplained.first, len(found)) == (False, 6, 1)  # full after it


@pytest.mark.parametrize("requests", [
    [(1.0, 1.1, "A", 0), (2.0, 2.1, "A", 0), (3.0, 3.1, "A", 0)],  # one at a time: no race explains the third
    [(1.0, 1.2, "A", 0), (1.01, 1.2, "A", 1), (2.0, 2.2, "A", 2), (2.01, 2.2, "A", 3)],  # full before the pair
])
def test_a_pass_no_race_explains_is_no_overshoot(requests: list) -> None:
    explanation, found = explain_overshoot(Timeline.of(requests), RATES, Prior.fresh(RATES, 0.0))
    assert (explanation.consistent, found) == (False, ())


def check(authorized: int, in_flight: int, overshoots: tuple[Overshoot, ...] = ()) -> UserCheck:
    client = Account("u3", "free", sent=authorized, authorized=authorized)
    return UserCheck(user="u3", tier="free", client=client, counted=None, server_authorized=authorized,  # type: ignore
                     server_limited=0, server_tokens=None, resets=0, rates=RATES, bounds={LIMIT: (2, 1)},
                     in_flight=in_flight, overshoots=overshoots)


@pytest.mark.parametrize("authorized, in_flight, strict, state, text", [
    (2, 1, False, "holds", ""),
    (4, 3, False, "holds", "u3: 2 over free-user-requests (2 per 120 s), within 3 requests in flight at once "
                           "(Limitador's check-then-update race)"),
    (4, 3, True, "fails", " (3 requests in flight at once), which --strict-limits fails"),
    (5, 3, False, "fails", "; 3 requests in flight at once explain at most 2"),
    (3, 1, False, "fails", ""),
])
def test_policy_limit_held_passes_an_overshoot_only_within_what_was_in_flight(
        authorized: int, in_flight: int, strict: bool, state: str, text: str) -> None:
    found = verdicts.policy_limit_held(check(authorized, in_flight), RATES[0], strict)
    if state == "holds":
        assert (found.state, found.note) == (verdicts.HOLDS, text)
    else:
        assert found.title == (f"u3: the limit {LIMIT} did not hold: the client got {authorized} answer(s) past the "
                               f"limiter and the server counted {authorized} authorized, but over the run's timeline "
                               f"the policy lets at most 2 through (1 window(s)){text}")


def test_limiters_reading_and_update_apart_let_concurrent_requests_overshoot() -> None:
    limiter = Limiter(clock=lambda: 0.0)
    spec = CounterSpec("free-user-requests", 0, ("u3",), 2, 120.0)
    assert [limiter.decide([spec]) for _ in range(3)] == [None, None, None]  # all read 0 before any update
    for _ in range(3):
        limiter.commit([spec])
    assert ([c.value for c in limiter.counters()], limiter.decide([spec]), limiter.check([spec])) == ([3], spec, spec)
