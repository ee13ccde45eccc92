"""The window model's one-step stretches give exactly what following every request gives: random timelines (one or
several senders, slow answers, cut-off and unanswered requests, several limits, windows open before the run), each
answered by a simulated Limitador or with faults, are predicted and explained both ways."""
from __future__ import annotations

import random

import numpy as np
import pytest

from chargeback import expectations
from chargeback.expectations import EDGE, Prior, explain, most_authorized, predict
from chargeback.ledger import ANY_SENDER, AUTHORIZED, DECIDED, LIMITED, MAYBE, Timeline
from chargeback.plan import Rate

RATES = [Rate("burst", 3, 2.0), Rate("minute", 20, 30.0)]


def limitador(times: list[tuple[float, float, int]], rates: list[Rate], rng: random.Random,
              faults: float) -> Timeline:
    """Answers from fixed windows that open at the first allowed hit, each request reaching the limiter at a random
    moment while in flight; with probability `faults` an answer is flipped, cut off, or never comes."""
    arrivals = sorted((rng.uniform(sent, done), sent, done, sender) for sent, done, sender in times)
    windows: list[list[float] | None] = [None] * len(rates)
    rows = []
    for at, sent, done, sender in arrivals:
        live = [w if w is not None and at < w[0] + r.window else None for w, r in zip(windows, rates)]
        allowed = all((w[1] if w else 0) < r.limit for w, r in zip(live, rates))
        if allowed:
            live = [[at, 1] if w is None else [w[0], w[1] + 1] for w in live]
        windows = live
        outcome = AUTHORIZED if allowed else LIMITED
        roll = rng.random()
        if roll < faults / 3:
            outcome = LIMITED if allowed else AUTHORIZED
        elif roll < 2 * faults / 3:
            outcome = DECIDED if done - sent > 0.1 else MAYBE
        rows.append((sent, done, outcome, sender))
    return Timeline.of(rows)


def traffic(rng: random.Random, senders: int, n: int) -> list[tuple[float, float, int]]:
    """Each sender's requests one after another, some back to back, some slow, some after a pause."""
    times = []
    for sender in range(senders):
        t = rng.uniform(0, 0.5)
        for _ in range(n // senders):
            latency = rng.choice([0.001, 0.01, 0.05, 0.3, 1.5]) if rng.random() < 0.3 else 0.01
            times.append((t, t + latency, sender if senders > 1 or rng.random() < 0.5 else ANY_SENDER))
            t += latency + rng.choice([0.0, 0.0005, EDGE / 2, 0.02, 0.2, 1.0, 3.0])
    return times


def one_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model with no one-step stretch: every request followed on its own."""
    monkeypatch.setattr(expectations._Scan, "stretch_end", lambda self, states, rates, index, limit: index)


@pytest.mark.parametrize("seed", range(40))
def test_stretches_give_what_following_every_request_gives(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    rates = RATES[: 1 + seed % 2]
    requests = limitador(traffic(rng, 1 + seed % 3, 300), rates, rng, faults=0.0 if seed % 4 else 0.02)
    prior = Prior.fresh(rates, 0.0) if seed % 5 else Prior.unknown(rates, 0.0, "test")
    fast = (predict(requests, rates, prior), explain(requests, rates, prior),
            [most_authorized(requests, r, i, prior) for i, r in enumerate(rates)])
    one_by_one(monkeypatch)
    slow = (predict(requests, rates, prior), explain(requests, rates, prior),
            [most_authorized(requests, r, i, prior) for i, r in enumerate(rates)])
    assert fast == slow


def group_end(requests: Timeline, first: int) -> int:
    """The grouping rule, request by request: the last request sent while one of the group was in flight (by its
    sender's clock; with EDGE to spare against another sender's)."""
    ends = {int(requests.sender[first]): float(requests.done[first])}
    last = first
    while last + 1 < len(requests):
        sent, sender = float(requests.sent[last + 1]), int(requests.sender[last + 1])
        if not any(sent < end + (0.0 if who == sender != ANY_SENDER else EDGE) for who, end in ends.items()):
            break
        last += 1
        ends[sender] = max(ends.get(sender, sent), float(requests.done[last]))
    return last


@pytest.mark.parametrize("seed", range(40))
def test_groups_found_at_once_are_the_groups_found_request_by_request(seed: int) -> None:
    rng = random.Random(seed)
    requests = limitador(traffic(rng, 1 + seed % 4, 200), RATES, rng, faults=0.0)
    starts, first = [], 0
    while first < len(requests):
        starts.append(first)
        first = group_end(requests, first) + 1
    assert expectations._group_starts(requests).tolist() == starts + [len(requests)]


def test_a_long_steady_timeline_is_decided_in_one_step_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """An hour at 10 requests/s against 20 per 30 s: 36,000 requests, 120 windows, each window's requests past the
    first ones handled at once."""
    rate = Rate("minute", 20, 30.0)
    sent = np.arange(36_000) * 0.1
    outcome = np.where((sent % 30.0) < 1.95, AUTHORIZED, LIMITED)  # the first 20 of each window
    requests = Timeline(sent, sent + 0.01, outcome.astype("<U1"), np.zeros(36_000, dtype=np.int32))
    steps = []
    original = expectations._through_group
    monkeypatch.setattr(expectations, "_through_group", lambda *a: steps.append(1) or original(*a))
    p = predict(requests, [rate], Prior.fresh([rate], 0.0))
    assert (p.authorized, p.limited) == ((2400, 2400), (33_600, 33_600))
    assert explain(requests, [rate], Prior.fresh([rate], 0.0)).consistent is True
    assert len(steps) <= 120 * 3  # per window: the request that opens it, and at most two more before a stretch


def most_windows(times: list[tuple[float, float]], length: float, opens_from: float) -> int:
    """How many windows the requests could open, request by request: each opens at the earliest moment a request
    could arrive after the previous window."""
    count, next_open = 0, opens_from
    while True:
        arrivals = [max(sent, next_open) for sent, done in times if done >= next_open]
        if not arrivals:
            return count
        count += 1
        next_open = min(arrivals) + max(length, EDGE)


@pytest.mark.parametrize("seed", range(12))
def test_the_windows_counted_at_once_are_those_counted_request_by_request(seed: int) -> None:
    rng = random.Random(seed)
    requests = limitador(traffic(rng, 1 + seed % 3, 120), RATES, rng, faults=0.02)
    times = list(zip(requests.sent.tolist(), requests.done.tolist()))
    for length in (0.0, 0.5, 2.0, 30.0):
        for opens_from in (float("-inf"), 1.0):
            assert expectations._most_windows(requests.sent, requests.done, length, opens_from) == most_windows(
                times, length, opens_from)
