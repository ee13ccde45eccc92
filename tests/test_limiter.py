"""Limitador's semantics in the stand-in's limiter, on a controlled clock."""
from __future__ import annotations

from sim.limiter import CounterSpec, Limiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(limit: int, seconds: float, name: str = "free", values: tuple[str, ...] = ("u1",), hits: int = 1) -> CounterSpec:
    return CounterSpec(name, 0, values, limit, seconds, hits)


def outcomes(limiter: Limiter, clock: Clock, specs: list[CounterSpec], times: list[float]) -> list[bool]:
    """True for each request the limiter lets through, sent at the given offsets from 1000 s."""
    allowed = []
    for t in times:
        clock.now = 1000.0 + t
        allowed.append(limiter.check(specs) is None)
    return allowed


def test_window_opens_at_the_first_hit_not_at_the_clock() -> None:
    clock, free = Clock(), spec(2, 10)
    limiter = Limiter(clock)
    # first hit at 5 s: the window runs to 15 s, so 14.9 is still limited and 15.0 opens a new window
    assert outcomes(limiter, clock, [free], [5, 6, 7, 14.9, 15.0, 15.1, 15.2]) == [
        True, True, False, False, True, True, False]


def test_limited_requests_consume_nothing() -> None:
    clock, free = Clock(), spec(2, 10)
    limiter = Limiter(clock)
    outcomes(limiter, clock, [free], [0, 1] + [2 + i * 0.1 for i in range(50)])
    clock.now = 1010.0
    assert limiter.counters() == []
    assert outcomes(limiter, clock, [free], [10, 10.5, 11]) == [True, True, False]


def test_sequential_traffic_inside_one_window_gets_exactly_the_limit() -> None:
    clock = Clock()
    limiter = Limiter(clock)
    seed = [("premiumuser1", 10, 8), ("freeuser1", 2, 5), ("premiumuser2", 10, 6)]
    results = [outcomes(limiter, clock, [spec(limit, 120, values=(user,))], [i * 0.01 for i in range(n)])
               for user, limit, n in seed]
    assert [(r.count(True), r.count(False)) for r in results] == [(8, 0), (2, 3), (6, 0)]


def test_counters_are_per_value() -> None:
    clock = Clock()
    limiter = Limiter(clock)
    assert outcomes(limiter, clock, [spec(1, 60, values=("a",))], [0, 1]) == [True, False]
    assert outcomes(limiter, clock, [spec(1, 60, values=("b",))], [2]) == [True]


def test_every_matching_limit_is_checked_and_a_limited_request_adds_to_none() -> None:
    clock = Clock()
    short, long = spec(2, 10, name="burst"), spec(3, 60, name="hourly")
    limiter = Limiter(clock)
    assert outcomes(limiter, clock, [short, long], [0, 1, 2]) == [True, True, False]
    clock.now = 1002.0
    assert limiter.check([short, long]) == short
    assert {s.spec.limit_name: s.value for s in limiter.counters()} == {"burst": 2, "hourly": 2}
    assert outcomes(limiter, clock, [short, long], [10, 11]) == [True, False]  # burst renewed, hourly now full
    clock.now = 1011.0
    assert limiter.check([short, long]) == long
    assert {s.spec.limit_name: s.value for s in limiter.counters()} == {"burst": 1, "hourly": 3}


def test_token_limit_checks_with_zero_cost_and_counts_reported_hits() -> None:
    clock, tokens = Clock(), spec(100, 60, name="tokens", hits=0)
    limiter = Limiter(clock)
    assert limiter.check([tokens]) is None
    assert limiter.counters() == []  # a zero-cost check opens no window
    limiter.report([tokens], 60)
    assert limiter.check([tokens]) is None  # 60 < 100
    limiter.report([tokens], 60)  # the request that crosses the limit was allowed
    assert limiter.check([tokens]) == tokens  # 120 >= 100: the next one is limited
    clock.now += 60
    assert limiter.check([tokens]) is None


def test_a_report_of_zero_tokens_is_charged_as_one() -> None:
    clock, tokens = Clock(), spec(2, 60, name="tokens", hits=0)
    limiter = Limiter(clock)
    limiter.report([tokens], 0)  # opens the window, as a report of 1 would
    clock.now = 1010.0
    assert [(s.value, s.expires_in) for s in limiter.counters()] == [(1, 50.0)]
    limiter.report([tokens], 0)
    assert [(s.value, s.remaining) for s in limiter.counters()] == [(2, 0)]
    assert limiter.check([tokens]) == tokens


def test_counters_report_remaining_and_expiry() -> None:
    clock, free = Clock(), spec(5, 120)
    limiter = Limiter(clock)
    outcomes(limiter, clock, [free], [0, 1, 2])
    clock.now = 1030.0
    [state] = limiter.counters()
    assert (state.value, state.remaining, state.expires_in) == (3, 2, 90.0)
    clock.now = 1120.0
    assert limiter.counters() == []


def test_a_new_counter_is_created_when_checked_even_if_a_later_limit_limits() -> None:
    clock = Clock()
    full, fresh = spec(1, 60, name="daily", values=("u1",)), spec(5, 30, name="burst", values=("u1",))
    limiter = Limiter(clock)
    assert limiter.check([full]) is None
    clock.now = 1010.0
    assert limiter.check([fresh, full]) == full  # burst checked first: created at 0, expiring at 1040
    assert [(s.spec.limit_name, s.value, s.remaining, s.expires_in) for s in limiter.counters()] == [
        ("daily", 1, 0, 50.0), ("burst", 0, 5, 30.0)]
    clock.now = 1035.0
    assert limiter.check([fresh]) is None  # counts in the window opened by the check, not a new one
    assert {s.spec.limit_name: (s.value, s.expires_in) for s in limiter.counters()}["burst"] == (1, 5.0)


def test_every_counter_is_checked_after_a_limiting_one_and_new_ones_are_created() -> None:
    clock = Clock()
    full, later = spec(1, 60, name="daily"), spec(5, 30, name="burst")
    limiter = Limiter(clock)
    limiter.check([full])
    clock.now = 1010.0
    assert limiter.check([full, later]) == full  # the first limiting counter is named; burst is still checked
    assert [(s.spec.limit_name, s.value, s.remaining, s.expires_in) for s in limiter.counters()] == [
        ("daily", 1, 0, 50.0), ("burst", 0, 5, 30.0)]


def test_a_limited_request_does_not_renew_an_expired_window() -> None:
    clock = Clock()
    short, full = spec(2, 10, name="short"), spec(1, 600, name="long", values=("u2",))
    limiter = Limiter(clock)
    assert limiter.check([short]) is None and limiter.check([full]) is None
    clock.now = 1020.0  # short expired at 1010
    assert limiter.check([short, full]) == full
    assert [s.spec.limit_name for s in limiter.counters()] == ["long"]  # short still expired, still not listed
    clock.now = 1025.0
    assert limiter.check([short]) is None  # the next allowed update sets value = 1 and expiry = now + 10
    assert {s.spec.limit_name: (s.value, s.expires_in) for s in limiter.counters()}["short"] == (1, 10.0)


def test_an_unqualified_limit_opens_no_window_on_a_check() -> None:
    clock, everyone, full = Clock(), spec(3, 60, name="all", values=()), spec(1, 60, name="u1")
    limiter = Limiter(clock)
    limiter.check([full])
    assert limiter.check([everyone, full]) == full
    assert [s.spec.limit_name for s in limiter.counters()] == ["u1"]


def test_remaining_wraps_as_limitadors_unsigned_value() -> None:
    clock, tokens = Clock(), spec(100, 60, name="tokens", hits=0)
    limiter = Limiter(clock)
    limiter.report([tokens], 130)
    [state] = limiter.counters()
    assert (state.value, state.remaining) == (130, 2**64 - 30)


def test_clear_forgets_every_window() -> None:
    clock, free = Clock(), spec(1, 60)
    limiter = Limiter(clock)
    assert outcomes(limiter, clock, [free], [0, 1]) == [True, False]
    limiter.clear()
    assert limiter.counters() == []
    assert outcomes(limiter, clock, [free], [2, 3]) == [True, False]
