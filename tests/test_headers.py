"""The rate-limit headers: the stand-in serves them as Limitador does, the ledger keeps them (merged and written
exactly, only when answers carried them), and the witness check's exact verdicts on staged timelines (earlier
traffic, requests in flight together, several limits on one user, each contradiction)."""
from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
from requests.structures import CaseInsensitiveDict
from test_gateway import BODY, call, gateway
from test_plan import DEPLOY, limit_policy, write
from test_verify import snapshot

from chargeback.cli import build_parser as cli_parser
from chargeback.headers import Listed, parse_limit, rate_limit_headers_agree
from chargeback.ledger import NO_HEADER, Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.summary import PlanSummary
from chargeback.verdicts import FAILS, HOLDS, NOT_APPLICABLE, UNDECIDED, Verdict, clock
from chargeback.verify import Verification, verify
from sim.faults import Faults
from sim.gateway import build_parser as gateway_parser
from sim.limiter import CounterSpec, Limiter
from users.wire import rate_limit_headers_of

FREE = '2, 2;w=120;name="free-user-requests"'
FREE_RATE = "free-user-requests (2 per 120 s)"
SHORT = "free-short (1 per 10 s)"
T0 = 1_000_000.0  # the runs' epoch seconds

Answer = tuple[float, float, int, tuple[int, int, str] | None]  # sent, done, status, headers


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the stand-in --------------------------------------------------------------------------------------------------
def rate_headers(app, user: str) -> tuple[int, dict[str, str]]:
    status, headers, _ = call(app, "POST", "/v1/completions", {"Authorization": f"APIKEY {user}_key"}, BODY)
    return status, {k.decode(): v.decode() for k, v in headers.items() if k.startswith(b"x-ratelimit")}


def test_the_stand_in_serves_limitadors_headers_on_200_and_429_only_when_asked() -> None:
    clock = Clock()
    app = gateway(clock=clock, rate_limit_headers=True)
    seen = []
    for _ in range(4):
        seen.append(rate_headers(app, "freeuser1"))
        clock.now += 10
    assert seen == [(200, {"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "1", "x-ratelimit-reset": "120"}),
                    (200, {"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "0", "x-ratelimit-reset": "110"}),
                    (429, {"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "0", "x-ratelimit-reset": "100"}),
                    (429, {"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "0", "x-ratelimit-reset": "90"})]
    assert rate_headers(gateway(), "freeuser1") == (200, {})


def test_several_limits_list_the_most_restrictive_first(tmp_path: Path) -> None:
    write(tmp_path, "short.yaml", limit_policy("free-short", "[{limit: 1, window: 10s}]"))
    clock = Clock()
    app = gateway("seed", DEPLOY, tmp_path, clock=clock, rate_limit_headers=True)
    seen = []
    for step in (0, 1, 10, 1):
        clock.now += step
        seen.append(rate_headers(app, "freeuser1"))
    both = ('2;w=120;name="free-user-requests"', '1;w=10;name="free-short"')
    assert seen == [
        (200, {"x-ratelimit-limit": f"1, {both[1]}, {both[0]}", "x-ratelimit-remaining": "0",
               "x-ratelimit-reset": "10"}),
        (429, {"x-ratelimit-limit": f"1, {both[1]}, {both[0]}", "x-ratelimit-remaining": "0",
               "x-ratelimit-reset": "9"}),
        (200, {"x-ratelimit-limit": f"2, {both[0]}, {both[1]}", "x-ratelimit-remaining": "0",  # a tie: policy order
               "x-ratelimit-reset": "109"}),
        (429, {"x-ratelimit-limit": f"2, {both[0]}, {both[1]}", "x-ratelimit-remaining": "0",
               "x-ratelimit-reset": "108"})]


def test_a_token_limit_check_sends_no_headers(tmp_path: Path) -> None:
    write(tmp_path, "tokens.yaml", limit_policy("free-tokens", "[{limit: 50, window: 1m}]",
                                                kind="TokenRateLimitPolicy"))
    only_tokens = tmp_path / "only"
    only_tokens.mkdir()
    for name in ("api-keys.yaml", "auth-policy.yaml"):
        (only_tokens / name).write_text((DEPLOY / name).read_text())
    app = gateway("seed", only_tokens, tmp_path, rate_limit_headers=True)
    assert rate_headers(app, "freeuser1") == (200, {})
    both = gateway("seed", DEPLOY, tmp_path, rate_limit_headers=True)
    assert rate_headers(both, "freeuser1") == (200, {"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "1",
                                                     "x-ratelimit-reset": "119"})


def test_the_header_faults() -> None:
    clock = Clock()
    app = gateway(clock=clock, rate_limit_headers=True, faults=Faults.parse(["headers-stale:freeuser1",
                                                                              "early-reset:freeuser1"]))
    seen = []
    for _ in range(5):
        seen.append(rate_headers(app, "freeuser1"))
        clock.now += 10
    assert [(s, int(h["x-ratelimit-remaining"]), int(h["x-ratelimit-reset"])) for s, h in seen] == [
        (200, 2, 120), (200, 1, 110), (429, 0, 100), (200, 2, 120), (200, 1, 110)]  # not decremented; forgotten
    assert [rate_headers(app, "premiumuser1")[1]["x-ratelimit-remaining"] for _ in range(2)] == ["9", "8"]


def test_the_limiter_reports_each_counter_as_limitador_annotates_it() -> None:
    clock = Clock()
    limiter = Limiter(clock)
    spec = CounterSpec("limit.free", 0, ("u",), 2, 60.0)
    seen = []
    for step in (0, 10, 10, 41):
        clock.now += step
        allowed = limiter.decide([spec]) is None
        seen.append((allowed, [(s.value, s.remaining, s.expires_in) for s in limiter.states([spec], allowed)]))
        if allowed:
            limiter.commit([spec])
    assert seen == [(True, [(1, 1, 60.0)]), (True, [(2, 0, 50.0)]), (False, [(2, 0, 40.0)]),
                    (True, [(1, 1, 60.0)])]  # the last one after the window expired: a whole window ahead
    limiter.forget([spec])
    assert limiter.counters() == []


# --- the client side: parsing, the ledger, the record --------------------------------------------------------------
@pytest.mark.parametrize("headers, parsed", [
    ({"X-RateLimit-Limit": FREE, "X-RateLimit-Remaining": "1", "X-RateLimit-Reset": "119"}, (1, 119, FREE)),
    ({"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "0"}, (0, NO_HEADER, FREE)),  # Limitador before 2.4
    ({"x-ratelimit-limit": FREE}, None), ({"x-ratelimit-remaining": "1"}, None), ({}, None), (None, None),
    ({"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "x"}, None),
    ({"x-ratelimit-limit": FREE, "x-ratelimit-remaining": "-3"}, None),
])
def test_the_headers_are_read_from_an_answer(headers: dict | None, parsed: tuple | None) -> None:
    assert rate_limit_headers_of(CaseInsensitiveDict(headers) if headers is not None else None) == parsed


def test_the_limit_header_lists_each_counter() -> None:
    assert parse_limit(FREE) == (Listed(2, 120, "free-user-requests"),)
    assert parse_limit('1, 1;w=10;name="a", 5;w=60') == (Listed(1, 10, "a"), Listed(5, 60, None))
    assert [parse_limit(t) for t in ("2", "3, 2;w=120", "2, 2;w=x", "x, 2;w=1")] == [None] * 4


def headers_of(ledger: Ledger) -> dict[str, list]:
    """Per user, each request's (sent, status, header row) in send order."""
    found = {}
    for user, account in ledger.accounts.items():
        h = account.rate_headers
        rows = [(r, t, h.limits[i] if i != NO_HEADER else None) for r, t, i in zip(h.remaining, h.reset, h.limit)] \
            if h is not None else [None] * len(account.columns[0])
        found[user] = sorted(zip(account.columns[0], account.columns[2], rows))
    return found


def test_the_ledger_keeps_headers_only_for_answers_that_carried_them_and_merges_them_exactly() -> None:
    rng = random.Random(3)
    texts = [FREE, '10, 10;w=120;name="premium-user-requests"', '1, 1;w=10;name="x", 2;w=120;name="y"']
    whole, workers, master = Ledger(), [Ledger(), Ledger()], Ledger()
    for n in range(3000):
        user = rng.choice(["a", "b", "c"])
        carried = user != "c" and rng.random() < 0.7
        headers = (rng.randrange(10), rng.randrange(120), rng.choice(texts)) if carried else None
        for ledger in (whole, workers[n % 2]):
            ledger.record(user, "free", float(n), n + 0.5, 200, None, 0, "", headers)
        if n % 89 == 0:
            master.merge(workers[n % 2].drain())
    for worker in workers:
        master.merge(worker.drain())
    assert headers_of(master) == headers_of(whole)
    assert master.accounts["c"].rate_headers is None and whole.accounts["a"].rate_headers is not None
    late = Ledger()
    late.record("u", "free", 1.0, 1.1, 401)
    late.record("u", "free", 2.0, 2.1, 200, headers=(1, 119, FREE))
    late.record("u", "free", 3.0, 3.1, 0)
    assert headers_of(late)["u"] == [(1.0, 401, (NO_HEADER, NO_HEADER, None)), (2.0, 200, (1, 119, FREE)),
                                     (3.0, 0, (NO_HEADER, NO_HEADER, None))]


def test_the_record_writes_header_columns_only_when_answers_carried_them(tmp_path: Path) -> None:
    plan = PlanSummary.of(load_plan([DEPLOY]))
    ledger = Ledger()
    ledger.record("freeuser1", "free", 1.0, 1.1, 200)
    bare = RunRecord.start(tmp_path / "bare", {"scenario": "x"}, plan)
    bare.finish(ledger, complete=True)
    with zipfile.ZipFile(bare.path / "ledger.npz") as archive:
        assert not [n for n in archive.namelist() if n.startswith("rl_")]
    assert RunRecord.load(bare.path).ledger.accounts["freeuser1"].rate_headers is None
    ledger.record("freeuser1", "free", 2.0, 2.1, 200, headers=(0, 118, FREE))
    ledger.record("premiumuser1", "premium", 2.0, 2.1, 200, headers=(9, 119, texts := '10, 10;w=120;name="p"'))
    ledger.record("premiumuser2", "premium", 2.0, 2.1, 200)
    carried = RunRecord.start(tmp_path / "carried", {"scenario": "x"}, plan)
    carried.finish(ledger, complete=True)
    with zipfile.ZipFile(carried.path / "ledger.npz") as archive:
        assert sorted(n for n in archive.namelist() if n.startswith("rl_")) == [
            "rl_limit.npy", "rl_limit_texts.npy", "rl_remaining.npy", "rl_reset.npy"]
    loaded = RunRecord.load(carried.path).ledger
    assert headers_of(loaded) == headers_of(ledger) and loaded.accounts["premiumuser2"].rate_headers is None
    assert headers_of(loaded)["premiumuser1"] == [(2.0, 200, (9, 119, texts))]


# --- the witness ---------------------------------------------------------------------------------------------------
def verification(tmp_path: Path, answers: dict[str, list[Answer]], policies: list[Path] | None = None,
                 resets: int = 0) -> Verification:
    """A finished record of these answers (sent and done relative to T0, sender 0), read back, put side by side."""
    plan = PlanSummary.of(load_plan(policies or [DEPLOY]))
    record = RunRecord.start(tmp_path / "runs", {"scenario": "x"}, plan)
    ledger = Ledger()
    for user, rows in answers.items():
        tier = plan.identity(user).tier
        for sent, done, status, headers in rows:
            ledger.record(user, tier, T0 + sent, T0 + done, status, None, 0, "", headers)
    record.finish(ledger, complete=True)
    return verify(RunRecord.load(record.path), snapshot(), snapshot(), {u: resets for u in answers}, "seed")


def witness(v: Verification, user: str = "freeuser1", rate: int = 0) -> Verdict:
    check = v.users[user]
    return rate_limit_headers_agree(check, check.rates[rate], v)


def at(t: float) -> str:
    return clock(T0 + t)


def ok(left: int, reset: int, text: str = FREE) -> tuple[int, int, str]:
    return left, reset, text


HONEST_FRESH = [(0.0, 0.05, 200, ok(1, 119)), (1.0, 1.05, 200, ok(0, 118)), (2.0, 2.05, 429, ok(0, 117)),
                (3.0, 3.05, 429, ok(0, 116))]


@pytest.mark.parametrize("answers", [
    HONEST_FRESH,
    # earlier traffic: the window was full before the run, and ends 50 s in; then a fresh one
    [(0.0, 0.05, 429, ok(0, 50)), (1.0, 1.05, 429, ok(0, 49)), (51.0, 51.05, 200, ok(1, 119)),
     (52.0, 52.05, 200, ok(0, 118)), (53.0, 53.05, 429, ok(0, 117))],
    # three in flight together, decided in another order than sent; then one after them
    [(0.0, 0.5, 200, ok(0, 119)), (0.1, 0.4, 200, ok(1, 119)), (0.2, 0.3, 429, ok(0, 119)),
     (1.0, 1.05, 429, ok(0, 118))],
    # a window that ends while a request is in flight: either side of its end is possible
    [(0.0, 0.05, 200, ok(1, 2)), (1.0, 1.05, 200, ok(0, 1)), (2.5, 3.6, 200, ok(1, 119))],
    # answers without headers (a 401, no answer) among them
    [(0.0, 0.05, 200, ok(1, 119)), (0.5, 0.55, 401, None), (0.7, 30.0, 0, None), (31.0, 31.05, 429, ok(0, 88))],
])
def test_an_honest_gateways_headers_hold(tmp_path: Path, answers: list[Answer]) -> None:
    assert witness(verification(tmp_path, {"freeuser1": answers})) == Verdict(HOLDS)


def test_a_200_after_the_window_was_full_fails_naming_the_user_and_the_request(tmp_path: Path) -> None:
    v = verification(tmp_path, {"freeuser1": HONEST_FRESH + [(4.0, 4.05, 200, ok(1, 119))]})
    found = witness(v)
    assert (found.state, found.title) == (FAILS, (
        f"freeuser1: request 5 (sent {at(4)}) got through, but request 2 (answered {at(1.05)}, before it was sent) "
        f"had said 0 left in a window lasting until at least {at(119)}: {FREE_RATE} was already full"))
    assert found.rows == [{"user": "freeuser1", "limit": FREE_RATE, "request": 5, "sent": at(4), "answer": 200,
                           "remaining": 1, "reset": 119, "against": "request 2: 0 left, reset 118"}]


def test_a_200_in_flight_with_the_one_that_filled_the_window_is_not_compared(tmp_path: Path) -> None:
    honest = [(0.0, 0.05, 200, ok(1, 119)), (1.0, 1.5, 200, ok(0, 118)), (1.2, 1.6, 200, ok(0, 118))]
    assert witness(verification(tmp_path, {"freeuser1": honest})) == Verdict(HOLDS)  # overshoot: not certain
    after = honest[:2] + [(1.6, 1.7, 200, ok(0, 118))]
    found = witness(verification(tmp_path / "after", {"freeuser1": after}))
    assert (found.state, found.title) == (FAILS, (
        f"freeuser1: request 3 (sent {at(1.6)}) got through, but request 2 (answered {at(1.5)}, before it was sent) "
        f"had said 0 left in a window lasting until at least {at(119)}: {FREE_RATE} was already full"))


def test_a_window_that_resets_early_fails(tmp_path: Path) -> None:
    found = witness(verification(tmp_path, {"freeuser1": [(0.0, 0.05, 200, ok(1, 119)),
                                                          (30.0, 30.05, 200, ok(1, 119))]}))
    assert (found.state, found.title) == (FAILS, (
        f"freeuser1: request 2 (sent {at(30)}) says 1 of {FREE_RATE} left, but request 1 (answered {at(0.05)}, "
        f"before it was sent) had said 1 left in a window lasting until at least {at(119)}, so at most 0 could be: "
        "the window reset early, or the remaining was not counted down"))
    moved = witness(verification(tmp_path / "moved", {"freeuser1": [(0.0, 0.05, 200, ok(1, 119)),
                                                                    (30.0, 30.05, 200, ok(0, 40))]}))
    assert (moved.state, moved.title) == (FAILS, (
        f"freeuser1: request 2 (sent {at(30)}) says {FREE_RATE}'s window ends in 40 s, but request 1 (answered "
        f"{at(0.05)}, before it was sent) had said 1 left in a window lasting until at least {at(119)}: the same "
        "window, yet its end moved (the window reset early)"))


def test_a_remaining_not_decremented_fails(tmp_path: Path) -> None:
    found = witness(verification(tmp_path, {"freeuser1": [(0.0, 0.05, 200, ok(2, 119)),
                                                          (1.0, 1.05, 200, ok(1, 118))]}))
    assert (found.state, found.title) == (FAILS, (
        f"freeuser1: request 1 (sent {at(0)}) got through, but its X-RateLimit-Remaining says 2 of {FREE_RATE} left: "
        "its own hit was not counted"))


@pytest.mark.parametrize("text, title", [
    ('5, 5;w=120;name="free-user-requests"',
     f"has X-RateLimit-Limit `5, 5;w=120;name=\"free-user-requests\"`: it lists free-user-requests (5 per 120 s), "
     f"but the policy says {FREE_RATE}"),
    ('2, 2;w=60;name="free-user-requests"',
     "has X-RateLimit-Limit `2, 2;w=60;name=\"free-user-requests\"`: it does not list free-user-requests (2 per "
     "120 s) (it lists free-user-requests (2 per 60 s)), which the policy applies to the user"),
    (f'{FREE}, 7;w=60;name="mystery"',
     f"has X-RateLimit-Limit `{FREE}, 7;w=60;name=\"mystery\"`: it lists mystery (7 per 60 s), a limit the policy "
     "does not have"),
    ("2, two", "has X-RateLimit-Limit `2, two`, which cannot be read"),
])
def test_a_header_limit_other_than_the_policys_fails(tmp_path: Path, text: str, title: str) -> None:
    found = witness(verification(tmp_path, {"freeuser1": [(0.0, 0.05, 200, ok(1, 119)),
                                                          (1.0, 1.05, 200, ok(0, 118, text))]}))
    assert (found.state, found.title) == (FAILS, f"freeuser1: request 2 (sent {at(1)}) {title}")


def test_several_limits_on_one_user_each_witnessed_by_the_answers_that_report_it(tmp_path: Path) -> None:
    write(tmp_path, "short.yaml", limit_policy("free-short", "[{limit: 1, window: 10s}]"))
    short_first = '1, 1;w=10;name="free-short", 2;w=120;name="free-user-requests"'
    long_first = '2, 2;w=120;name="free-user-requests", 1;w=10;name="free-short"'
    honest = [(0.0, 0.05, 200, ok(0, 9, short_first)), (1.0, 1.05, 429, ok(0, 8, short_first)),
              (11.0, 11.05, 200, ok(0, 108, long_first)), (12.0, 12.05, 429, ok(0, 107, long_first)),
              (25.0, 25.05, 429, ok(0, 94, long_first))]
    policies = [DEPLOY, tmp_path]
    v = verification(tmp_path / "honest", {"freeuser1": honest}, policies)
    assert [r.label for r in v.users["freeuser1"].rates] == [FREE_RATE, SHORT]
    assert (witness(v, rate=0), witness(v, rate=1)) == (Verdict(HOLDS), Verdict(HOLDS))
    lied = verification(tmp_path / "lied", {"freeuser1": honest + [(30.0, 30.05, 200, ok(0, 9, short_first))]},
                        policies)
    found = witness(lied, rate=0)
    assert (found.state, found.title, witness(lied, rate=1)) == (FAILS, (
        f"freeuser1: request 6 (sent {at(30)}) got through, but request 3 (answered {at(11.05)}, before it was sent) "
        f"had said 0 left in a window lasting until at least {at(119)}: {FREE_RATE} was already full"),
        Verdict(HOLDS))


def test_without_headers_the_check_does_not_apply_and_a_restart_leaves_it_undecided(tmp_path: Path) -> None:
    bare = verification(tmp_path / "bare", {"freeuser1": [(0.0, 0.05, 200, None)]})
    assert witness(bare) == Verdict(NOT_APPLICABLE, "no answer of the run carried rate-limit headers (Limitador's "
                                                    "rateLimitHeaders is not DRAFT_VERSION_03)")
    some = verification(tmp_path / "some", {"freeuser1": [(0.0, 0.05, 200, None)],
                                            "premiumuser1": [(0.0, 0.05, 200, ok(9, 119, '10, 10;w=120;name="p"'))]})
    assert witness(some) == Verdict(UNDECIDED, "cannot decide: freeuser1: none of its answers carried rate-limit "
                                               "headers")
    restarted = verification(tmp_path / "restarted", {"freeuser1": [(0.0, 0.05, 200, ok(1, 119)),
                                                                    (30.0, 30.05, 200, ok(1, 119))]}, resets=1)
    found = witness(restarted)
    assert found.state == UNDECIDED and found.title.startswith(
        f"cannot decide: freeuser1: 1 answer(s) contradict earlier ones about {FREE_RATE}, but its counters reset 1 "
        "time(s) during the run (a Limitador restart forgets windows); the first: freeuser1: request 2")


def test_the_stand_in_is_asked_for_headers_on_both_command_lines() -> None:
    assert cli_parser().parse_args(["stack", "up", "--rate-limit-headers"]).rate_limit_headers
    assert not cli_parser().parse_args(["stack", "up"]).rate_limit_headers
    assert gateway_parser().parse_args(["--policy", "p", "--rate-limit-headers"]).rate_limit_headers


def limiter_timeline(seed: int, requests: int = 400) -> list[Answer]:
    """Requests in flight together, each decided by a real Limiter at a random moment between its send and its
    answer (so in another order than sent), answered with the headers the stand-in builds from its states."""
    rng = random.Random(seed)
    clock = Clock()
    limiter = Limiter(clock)
    spec = CounterSpec("limit.free", 0, ("freeuser1",), 2, 120.0)
    sent = 0.0
    timeline = []
    for _ in range(requests):
        sent += rng.expovariate(0.5)
        done = sent + rng.uniform(0.001, 3.0)
        timeline.append((sent + rng.random() * (done - sent), sent, done))
    answers = []
    for decided, sent, done in sorted(timeline):
        clock.now = decided
        allowed = limiter.decide([spec]) is None
        [state] = limiter.states([spec], allowed)
        if allowed:
            limiter.commit([spec])
        answers.append((sent, done, 200 if allowed else 429, ok(max(2 - state.value, 0), int(state.expires_in))))
    return sorted(answers)


@pytest.mark.parametrize("seed", range(12))
def test_the_limiters_own_answers_in_any_order_hold(tmp_path: Path, seed: int) -> None:
    answers = limiter_timeline(seed)
    assert len({a[2] for a in answers}) == 2  # both answers, over several windows
    assert witness(verification(tmp_path, {"freeuser1": answers})) == Verdict(HOLDS)
    late = answers[:300] + [(answers[299][1] + 0.5, answers[299][1] + 0.6, 200, ok(1, 119))]  # past BLOCK answers
    found = witness(verification(tmp_path / "late", {"freeuser1": late}))  # a fresh window inside an open one
    assert found.state == FAILS and found.title.startswith("freeuser1: request 301 (sent "), found
