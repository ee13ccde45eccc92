"""The token-limit model: which requests Limitador's token check had to allow, had to limit, or could do either."""
from __future__ import annotations

import numpy as np

from chargeback.expectations import Prior, predict
from chargeback.ledger import AUTHORIZED, LIMITED, NO_REPORT, Timeline
from chargeback.plan import Rate
from chargeback.token_model import ALLOW, EITHER, LIMIT, explain_with_tokens, token_checks, with_token_calls

RATE = Rate("free-tokens", 30, 60.0)


def timeline(*requests: tuple[float, float, str, int]) -> Timeline:
    """(sent, answered, outcome, tokens reported) per request."""
    rows = sorted(requests)
    return Timeline(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
                    np.array([r[2] for r in rows], dtype="<U1"), np.full(len(rows), 0, dtype=np.int32),
                    np.array([r[3] for r in rows], dtype=np.int32))


def classes(t: Timeline, rate: Rate = RATE, known_from: float = float("-inf")) -> str:
    return "".join(token_checks(t, rate, known_from).tolist())


def test_the_request_that_crosses_the_limit_is_allowed_and_the_next_limited() -> None:
    t = timeline((0.0, 0.1, AUTHORIZED, 22), (1.0, 1.1, AUTHORIZED, 22), (2.0, 2.1, LIMITED, NO_REPORT),
                 (3.0, 3.1, LIMITED, NO_REPORT))
    assert classes(t) == ALLOW + ALLOW + LIMIT + LIMIT  # 0 and 22 used are under 30; 44 is not


def test_the_window_opens_at_the_first_report_not_the_first_request() -> None:
    # the first request is sent at 0 but answered (and reported) at 50: its window ends at 110, not at 60
    t = timeline((0.0, 50.0, AUTHORIZED, 40), (70.0, 70.1, LIMITED, NO_REPORT), (111.0, 111.1, AUTHORIZED, 5))
    assert classes(t) == ALLOW + LIMIT + ALLOW


def test_a_zero_token_report_is_charged_as_one() -> None:
    t = timeline(*[(float(i), i + 0.1, AUTHORIZED, 0) for i in range(3)], (3.0, 3.1, LIMITED, NO_REPORT))
    assert classes(t, Rate("tiny", 3, 60.0)) == ALLOW * 3 + LIMIT


def test_reports_of_requests_in_flight_at_once_leave_the_check_open() -> None:
    # two answers land while the third is in flight: its check may have come before them (0 used) or after (44)
    t = timeline((0.0, 0.5, AUTHORIZED, 22), (0.0, 0.5, AUTHORIZED, 22), (0.2, 0.7, LIMITED, NO_REPORT),
                 (1.0, 1.1, LIMITED, NO_REPORT))
    assert classes(t) == ALLOW + ALLOW + EITHER + LIMIT


def test_a_report_near_the_expiry_leaves_the_state_open_until_a_quiet_window() -> None:
    # the window opened at 0.1 ends at 60.1; the report at 60.12 may have landed in it or opened the next one, so
    # at 62 either 35 tokens are used (20 + 15) or 15 (the report at 61.1 opened the window)
    t = timeline((0.0, 0.1, AUTHORIZED, 20), (60.0, 60.12, AUTHORIZED, 20), (61.0, 61.1, AUTHORIZED, 15),
                 (62.0, 62.1, LIMITED, NO_REPORT), (200.0, 200.1, AUTHORIZED, 40), (201.0, 201.1, LIMITED, NO_REPORT))
    assert classes(t) == ALLOW + ALLOW + ALLOW + EITHER + ALLOW + LIMIT


def test_windows_of_earlier_traffic_leave_the_first_window_open() -> None:
    t = timeline((0.0, 0.1, AUTHORIZED, 5), (1.0, 1.1, AUTHORIZED, 5), (100.0, 100.1, AUTHORIZED, 40),
                 (101.0, 101.1, LIMITED, NO_REPORT))
    assert classes(t, known_from=0.0 + RATE.window + 0.055) == EITHER + EITHER + ALLOW + LIMIT
    assert classes(t) == ALLOW + ALLOW + ALLOW + LIMIT


def test_every_sure_answer_is_the_one_limitadors_semantics_give_on_random_traces() -> None:
    """The stand-in's limiter decides random traces (checks anywhere in flight, reports within the slack of the
    answer, concurrent senders, windows expiring mid-trace); the model's sure answers must all be its answers, and
    most answers must be sure."""
    from sim.limiter import CounterSpec, Limiter

    rate = Rate("t", 30, 5.0)
    sure = total = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        now = [0.0]
        limiter = Limiter(lambda now=now: now[0])
        spec = CounterSpec("t", 0, ("u",), rate.limit, rate.window, 0)
        n = int(rng.integers(5, 40))
        sent = np.cumsum(rng.exponential(rng.choice([0.2, 1.0, 3.0]), n))
        done = sent + rng.uniform(0.1, 2.0, n)
        checks = rng.uniform(sent, done - 0.06)
        tokens = rng.integers(0, 15, n)
        events = sorted([(c, 0, i) for i, c in enumerate(checks)])
        allowed: dict[int, bool] = {}
        while events:
            at, kind, i = events.pop(0)
            now[0] = at
            if kind == 0:
                allowed[i] = limiter.check([spec]) is None
                if allowed[i]:
                    events = sorted(events + [(done[i] + rng.uniform(-0.049, 0.0049), 1, i)])
            else:
                limiter.report([spec], max(int(tokens[i]), 1))
        t = timeline(*[(float(sent[i]), float(done[i]), AUTHORIZED if allowed[i] else LIMITED,
                        int(tokens[i]) if allowed[i] else NO_REPORT) for i in range(n)])
        got = token_checks(t, rate)
        truth = np.array([AUTHORIZED if allowed[i] else LIMITED for i in np.argsort(sent, kind="stable")])
        assert not ((got == ALLOW) & (truth == LIMITED)).any() and not ((got == LIMIT) & (truth == AUTHORIZED)).any(), \
            f"seed {seed}: {''.join(got)} vs {''.join(truth)}"
        sure += int(np.count_nonzero(got != EITHER))
        total += n
    assert sure > 0.6 * total, (sure, total)


FREE = Rate("free-requests", 2, 120.0)


def answers(*rows: tuple[float, str, int]) -> Timeline:
    """Sequential requests answered in 0.1 s: (sent, outcome, tokens reported)."""
    return timeline(*[(sent, sent + 0.1, outcome, tokens) for sent, outcome, tokens in rows])


def test_alone_the_token_check_is_the_one_call_and_its_model_predicts_it() -> None:
    t = answers((0, AUTHORIZED, 22), (1, AUTHORIZED, 22), (2, LIMITED, NO_REPORT), (3, LIMITED, NO_REPORT))
    tokens = token_checks(t, RATE)
    p = with_token_calls(predict(t, [], Prior.fresh([], 0.0)), t, tokens, request_limits=False)
    assert (p.authorized, p.limited, p.decided) == ((2, 2), (2, 2), True)
    assert explain_with_tokens(t, [], Prior.fresh([], 0.0), tokens, [RATE])[0].consistent is True


def test_beside_request_limits_a_200_counts_twice_and_a_429_may_be_either_limits() -> None:
    # request limit 2 per 120 s: the third request is the request limit's 429, the token check never ran for it
    t = answers((0, AUTHORIZED, 22), (1, AUTHORIZED, 5), (2, LIMITED, NO_REPORT))
    tokens = token_checks(t, RATE)
    p = with_token_calls(predict(t, [FREE], Prior.fresh([FREE], 0.0)), t, tokens, request_limits=True)
    assert (p.authorized, p.limited) == ((4, 4), (1, 1))  # the 429 had to pass the token check: the request limit's
    assert explain_with_tokens(t, [FREE], Prior.fresh([FREE], 0.0), tokens, [RATE])[0].consistent is True
    # a token limit crossed first: the third is the token check's 429, after the request limit counted it
    t = answers((0, AUTHORIZED, 22), (1, AUTHORIZED, 22), (2, LIMITED, NO_REPORT))
    tokens = token_checks(t, RATE)
    p = with_token_calls(predict(t, [Rate("r", 5, 120.0)], Prior.fresh([FREE], 0.0)), t, tokens, True)
    assert (p.authorized, p.limited) == ((5, 5), (1, 1))  # 3 authorized by the request limit, 2 by the token check
    assert explain_with_tokens(t, [Rate("r", 5, 120.0)], Prior.fresh([FREE], 0.0), tokens, [RATE])[0].consistent


def test_a_200_the_token_check_had_to_limit_and_a_429_no_limit_gives_are_unexplained() -> None:
    t = answers((0, AUTHORIZED, 22), (1, AUTHORIZED, 22), (2, AUTHORIZED, 3))
    e, _ = explain_with_tokens(t, [], Prior.fresh([], 0.0), token_checks(t, RATE), [RATE])
    assert (e.consistent, e.unexplained.first, e.unexplained.full) == (False, 3, ("free-tokens (30 per 60 s)",))
    t = answers((0, AUTHORIZED, 22), (1, LIMITED, NO_REPORT))
    e, _ = explain_with_tokens(t, [Rate("r", 5, 120.0)], Prior.fresh([FREE], 0.0), token_checks(t, RATE),
                               [RATE])
    assert (e.consistent, e.unexplained.first, e.unexplained.limited) == (False, 2, 1)  # 22 < 30 and 1 < 5


def test_two_limiter_calls_are_reconciled_a_429_counting_authorized_only_where_the_token_check_may_have_given_it() -> None:
    from chargeback.reconcile import counted

    t = answers((0, AUTHORIZED, 22), (1, AUTHORIZED, 22), (2, LIMITED, NO_REPORT), (3, LIMITED, NO_REPORT))
    # the token check: 0 and 22 used pass; 44 limits: either 429 may be the token check's, after the request limit
    c = counted(t, (100.0, 100.0), token_check=token_checks(t, RATE) != ALLOW)
    assert [c.allows(a, 2) for a in (3, 4, 5, 6, 7)] == [False, True, True, True, False]
    assert (c.expected("authorized"), c.expected("limited")) == ("4..6", "2")
    # a token limit far away: both 429s are the request limit's, so exactly 4 authorized
    c = counted(t, (100.0, 100.0), token_check=token_checks(t, Rate("big", 1000, 60.0)) != ALLOW)
    assert [c.allows(a, 2) for a in (3, 4, 5)] == [False, True, False]
