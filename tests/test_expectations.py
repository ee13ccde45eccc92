"""The window model: exact where the timeline decides, a range at a window's edge or for a lost answer."""
from __future__ import annotations

from chargeback.expectations import Rate, expect
from chargeback.ledger import TRANSPORT_ERROR

FREE = Rate("free", 2, 120.0)


def sequential(times: list[float], status: int = 200, latency: float = 0.01) -> list[list[float]]:
    return [[t, t + latency, status] for t in times]


def test_sequential_traffic_in_one_window_gets_exactly_the_limit() -> None:
    e = expect(sequential([0, 0.1, 0.2, 0.3, 0.4]), [FREE])
    assert (e.authorized, e.limited, e.windows, e.decided) == ((2, 2), (3, 3), {"free (2 per 120 s)": 1}, True)


def test_window_opens_at_the_first_hit_after_expiry() -> None:
    e = expect(sequential([0, 1, 2, 125, 126, 127]), [FREE])  # second window opens at 125, not at 120
    assert (e.authorized, e.limited, e.windows["free (2 per 120 s)"]) == ((4, 4), (2, 2), 2)
    e = expect(sequential([10, 100, 129, 131]), [FREE])  # window 10..130: 129 is limited, 131 opens a new one
    assert (e.authorized, e.limited) == ((3, 3), (1, 1))


def test_limited_requests_consume_nothing() -> None:
    e = expect(sequential([0, 1] + [2 + i for i in range(100)] + [130, 131]), [FREE])
    assert (e.authorized, e.limited) == ((4, 4), (100, 100))


def test_a_request_at_the_edge_of_a_window_gives_a_range() -> None:
    e = expect(sequential([0, 1, 2]) + [[119.995, 120.02, 200]] + sequential([121]), [FREE])
    assert (e.authorized, e.limited, e.decided) == ((3, 4), (1, 2), False)


def test_a_request_without_answer_may_not_have_reached_the_limiter() -> None:
    e = expect([[0, 30, TRANSPORT_ERROR]] + sequential([31, 32]), [FREE])
    assert (e.authorized, e.limited) == ((2, 2), (0, 1))


def test_rejected_requests_never_reach_the_limiter() -> None:
    e = expect(sequential([0, 1, 2], status=401) + sequential([3, 4]), [FREE])
    assert (e.authorized, e.limited) == ((2, 2), (0, 0))


def test_every_limit_is_checked_and_no_limit_means_all_authorized() -> None:
    burst, hourly = Rate("burst", 2, 10.0), Rate("hourly", 3, 3600.0)
    e = expect(sequential([0, 1, 2, 11, 12, 13, 25]), [burst, hourly])
    assert (e.authorized, e.limited) == ((3, 3), (4, 4))
    assert e.windows == {"burst (2 per 10 s)": 2, "hourly (3 per 3600 s)": 1}
    assert expect(sequential([0, 1, 2]), []).authorized == (3, 3)


def test_token_limits_leave_only_the_upper_bound() -> None:
    from chargeback.expectations import under_token_limits

    e = under_token_limits(expect(sequential([0, 1, 2, 3]), [FREE]))
    assert (e.authorized, e.limited, e.decided) == ((0, 2), (2, 4), False)
    assert e.why_range == "token limits apply, which the model does not follow"
