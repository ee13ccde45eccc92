"""The window model: exact where the timeline decides, a range at a window's edge or for a lost answer; every
answer checked against the possible worlds; the most a limit lets through; the state before the run."""
from __future__ import annotations

import json

from chargeback.expectations import Prior, Request, explain, most_authorized, predict
from chargeback.ledger import AUTHORIZED as A
from chargeback.ledger import DECIDED as D
from chargeback.ledger import LIMITED as L
from chargeback.ledger import MAYBE as M
from chargeback.ledger import Timeline
from chargeback.plan import Rate

FREE = Rate("free", 2, 120.0)
FRESH = Prior.fresh([FREE], 0.0)
T = Timeline.of  # the model reads a timeline's columns


def sequential(times: list[float], outcome: str = A, latency: float = 0.01) -> list[Request]:
    return [Request(t, t + latency, outcome, 0) for t in times]


def answered(*pairs: tuple[float, str]) -> list[Request]:
    return [Request(t, t + 0.01, outcome, 0) for t, outcome in pairs]


def test_sequential_traffic_in_one_window_gets_exactly_the_limit() -> None:
    p = predict(T(sequential([0, 0.1, 0.2, 0.3, 0.4])), [FREE], FRESH)
    assert (p.authorized, p.limited, p.decided) == ((2, 2), (3, 3), True)


def test_window_opens_at_the_first_hit_after_expiry() -> None:
    p = predict(T(sequential([0, 1, 2, 125, 126, 127])), [FREE], FRESH)  # the second window opens at 125, not at 120
    assert (p.authorized, p.limited) == ((4, 4), (2, 2))
    p = predict(T(sequential([10, 100, 129, 131])), [FREE], FRESH)  # window 10..130: 129 is limited, 131 opens one
    assert (p.authorized, p.limited) == ((3, 3), (1, 1))


def test_limited_requests_consume_nothing() -> None:
    p = predict(T(sequential([0, 1] + [2 + i for i in range(100)] + [130, 131])), [FREE], FRESH)
    assert (p.authorized, p.limited) == ((4, 4), (100, 100))


def test_a_request_at_the_edge_of_a_window_gives_a_range() -> None:
    p = predict(T(sequential([0, 1, 2]) + [Request(119.995, 120.02, A)] + sequential([121])), [FREE], FRESH)
    assert (p.authorized, p.limited, p.decided) == ((3, 4), (1, 2), False)


def test_a_request_cut_off_early_may_not_have_reached_the_limiter_and_a_late_one_did() -> None:
    p = predict(T([Request(0, 0.05, M)] + sequential([31, 32])), [FREE], FRESH)
    assert (p.authorized, p.limited) == ((2, 2), (0, 1))
    p = predict(T([Request(0, 30, D)] + sequential([31, 32])), [FREE], FRESH)
    assert (p.authorized, p.limited) == ((2, 2), (1, 1))


def test_every_limit_is_checked_and_no_limit_means_all_authorized() -> None:
    burst, hourly = Rate("burst", 2, 10.0), Rate("hourly", 3, 3600.0)
    p = predict(T(sequential([0, 1, 2, 11, 12, 13, 25])), [burst, hourly], Prior.fresh([burst, hourly], 0.0))
    assert (p.authorized, p.limited) == ((3, 3), (4, 4))
    assert predict(T(sequential([0, 1, 2])), [], Prior.fresh([], 0.0)).authorized == (3, 3)


def test_answers_the_policy_gives_are_explained() -> None:
    assert explain(T(answered((0, A), (1, A), (2, L), (3, L), (130, A))), [FREE], FRESH).consistent is True


def test_a_200_inside_a_spent_window_is_unexplained_even_when_a_later_edge_opens_a_range() -> None:
    requests = answered((0, A), (1, A), (2, A)) + [Request(119.995, 120.02, A)]
    assert predict(T(requests), [FREE], FRESH).authorized == (2, 3)  # the totals alone would let 3 pass
    e = explain(T(requests), [FREE], FRESH)
    assert e.consistent is False and e.unexplained is not None
    assert (e.unexplained.first, e.unexplained.last, e.unexplained.authorized, e.unexplained.possible,
            e.unexplained.full) == (3, 3, 1, (0, 0), ("free (2 per 120 s)",))


def test_a_429_while_the_window_had_room_is_unexplained() -> None:
    e = explain(T(answered((0, A), (1, L))), [FREE], FRESH)
    assert e.consistent is False and e.unexplained is not None
    assert (e.unexplained.first, e.unexplained.limited, e.unexplained.possible, e.unexplained.full) == (
        2, 1, (1, 1), ())


def test_requests_in_flight_together_may_reach_the_limiter_in_any_order() -> None:
    one = Rate("one", 1, 60.0)
    overlapping = [Request(0.0, 0.5, L, 1), Request(0.1, 0.2, A, 2)]  # sent first, limited: the second came first
    assert explain(T(overlapping), [one], Prior.fresh([one], 0.0)).consistent is True
    both = [Request(0.0, 0.5, A, 1), Request(0.1, 0.2, A, 2)]
    e = explain(T(both), [one], Prior.fresh([one], 0.0))
    assert e.consistent is False and e.unexplained is not None
    assert (e.unexplained.first, e.unexplained.last, e.unexplained.authorized, e.unexplained.possible) == (
        1, 2, 2, (1, 1))


def test_one_senders_requests_follow_one_another_but_two_senders_clocks_may_differ() -> None:
    one = Rate("one", 1, 60.0)
    back_to_back = [Request(0.0, 0.001, L, 1), Request(0.0012, 0.002, A, 1)]  # a 429, then a 200: not possible
    assert explain(T(back_to_back), [one], Prior.fresh([one], 0.0)).consistent is False
    two_senders = [Request(0.0, 0.001, L, 1), Request(0.0012, 0.002, A, 2)]  # 0.2 ms apart on two clocks
    assert explain(T(two_senders), [one], Prior.fresh([one], 0.0)).consistent is True


def test_unanswered_requests_may_have_gone_either_way() -> None:
    requests = answered((0, A)) + [Request(1, 1.05, M), Request(2, 40, D)] + answered((41, L))
    assert explain(T(requests), [FREE], FRESH).consistent is True


def test_the_state_before_the_run_decides_what_the_run_gets() -> None:
    premium = Rate("premium", 10, 120.0)
    full_until_90 = Prior(((( -30.0, -29.0, 8, 8),),), 0.0, "/counters")  # 8 of 10 used, window ends at 90..91
    p = predict(T(sequential([1, 2, 3, 4, 5])), [premium], full_until_90)
    assert (p.authorized, p.limited) == ((2, 2), (3, 3))
    assert explain(T(answered((1, A), (2, A), (3, L), (4, L), (5, L))), [premium], full_until_90).consistent is True
    fresh_answers = answered((1, A), (2, A), (3, A), (4, L), (5, L))  # a gateway that forgot the window
    assert explain(T(fresh_answers), [premium], full_until_90).consistent is False
    assert predict(T(sequential([95])), [premium], full_until_90).authorized == (1, 1)  # a new window after expiry


def test_an_unknown_state_allows_any_window_but_not_more_than_the_limit() -> None:
    unknown = Prior.unknown([FREE], 0.0, "no reading")
    # an old window (0..2 used) may expire at any moment, then a new one opens: at most 2 + 2 through
    assert (unknown.exact, predict(T(sequential([1, 2, 3, 4, 5])), [FREE], unknown).authorized) == (False, (0, 4))
    assert explain(T(answered((1, L), (2, L))), [FREE], unknown).consistent is True  # a full window from before
    assert explain(T(answered((1, A), (2, A), (3, A), (4, A))), [FREE], unknown).consistent is True
    assert explain(T(answered((1, A), (2, A), (3, A), (4, A), (5, A))), [FREE], unknown).consistent is False


def test_most_authorized_counts_the_room_left_and_every_window_the_timeline_could_open() -> None:
    assert most_authorized(T(sequential([0, 1, 2, 3])), FREE, 0, FRESH) == (2, 1)
    assert most_authorized(T(sequential([0, 1, 119, 121, 122])), FREE, 0, FRESH) == (4, 2)
    half_full = Prior((((-60.0, -60.0, 1, 1),),), 0.0, "/counters")  # 1 used, the window ends at 60
    assert most_authorized(T(sequential([0, 1, 2, 70])), FREE, 0, half_full) == (3, 2)
    unknown = Prior.unknown([FREE], 0.0, "no reading")
    assert most_authorized(T(sequential([0, 1, 2])), FREE, 0, unknown) == (4, 2)


def test_a_prior_reads_back_from_its_json_form() -> None:
    known = Prior(((None, (90.0, 95.5, 1, 2)), ((10.0, 11.0, 2, 2), None)), 100.0, "history", True)
    unknown = Prior.unknown([FREE], 100.0, "no state read")
    for prior in (known, unknown, Prior.fresh([FREE, FREE], 5.0)):
        assert Prior.from_dict(json.loads(json.dumps(prior.to_dict()))) == prior
