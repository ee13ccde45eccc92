"""The window model: what Limitador could have decided for one identity, from the client's timeline.

Limitador keeps a fixed window per counter that opens at the first allowed hit after expiry; a request is allowed
iff every counter that applies has room, and a limited request consumes nothing. A request reaches the limiter at
an unknown moment between its send and its answer, so the model follows *worlds*: every state of the windows that
the timeline leaves possible (each window's opening time as a range, its count as a range). It starts from the
states the counters could be in before the run (the `Prior`) and answers three questions:

- `predict`: the authorized and limited calls Limitador should count, as ranges over every world, whatever the
  client was answered (the expected table);
- `explain`: whether some world gives the answers the client saw, and if none does, the first answer no world
  gives (a 200 inside a spent window, a 429 while every window had room). Requests in flight at the same time may
  reach the limiter in any order, so their answers are compared as a group, by count; a group that falls on a
  window's possible expiry is not compared at all (which of its requests came before the expiry is unknown);
- `most_authorized`: per rate, the most calls the policy lets through over the timeline: the room left in a
  window open before the run, plus the limit for every window the timeline could open.

A counter Limitador has never seen is, in Limitador, created by a check even when another limit limits that
request; the model does not follow that (it matters only for counters shared between identities).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import product
from typing import Any, NamedTuple

import numpy as np

from .ledger import ANY_SENDER, AUTHORIZED, LIMITED, MAYBE, Timeline
from .plan import Rate

EDGE = 0.005  # seconds of margin between two clocks (two senders) before the model calls two moments ordered
MAX_WORLDS = 2048

Window = tuple[float, float, int, int]  # opened no earlier, opened no later, count at least, count at most
State = tuple  # one Window, or None (no live window), per rate


class Request(NamedTuple):
    """One request that may have reached the limiter: when it was sent and answered, what the client saw, and
    which simulated user sent it (one sender's requests follow one another on one clock)."""

    sent: float
    done: float
    outcome: str  # AUTHORIZED | LIMITED | DECIDED (reached, answer unknown) | MAYBE (may not have reached)
    sender: int = ANY_SENDER


@dataclass(frozen=True)
class Prior:
    """The states the counters could be in at `at`, before the run's first request, and where that came from."""

    states: tuple[State, ...]
    at: float
    source: str
    exact: bool = True  # False when the state is a range because nothing better was known

    @classmethod
    def fresh(cls, rates: list[Rate], at: float, source: str = "no window open before the run") -> Prior:
        return cls(((None,) * len(rates),), at, source)

    @classmethod
    def unknown(cls, rates: list[Rate], at: float, why: str) -> Prior:
        """Any window may be open, with any count, opened within one window length before `at`."""
        choices = [(None, (at - r.window, at, 0, r.limit)) for r in rates]
        return cls(tuple(product(*choices)), at, f"unknown ({why}): windows may be open", exact=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, kept in the run record."""
        return {"states": [[list(w) if w else None for w in state] for state in self.states], "at": self.at,
                "source": self.source, "exact": self.exact}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Prior:
        states = tuple(tuple(tuple(w) if w else None for w in state) for state in data["states"])
        return cls(states, data["at"], data["source"], data["exact"])


@dataclass(frozen=True)
class Prediction:
    """Authorized and limited calls as ranges (lo == hi where the timeline decides them)."""

    authorized: tuple[int, int]
    limited: tuple[int, int]
    modelled: bool = True  # False when too many possibilities were open to follow
    why_range: str = "a request near the edge of a window, or without an answer"

    @property
    def decided(self) -> bool:
        return self.modelled and self.authorized[0] == self.authorized[1]


@dataclass(frozen=True)
class Unexplained:
    """The first group of requests whose answers no world gives."""

    first: int  # 1-based positions in the identity's timeline (sorted by send time)
    last: int
    sent: tuple[float, float]  # when the first and the last of them were sent
    authorized: int  # answered 200 (or another non-429) among them
    limited: int  # answered 429 among them
    possible: tuple[int, int]  # how many of them could have been authorized, over every world
    full: tuple[str, ...]  # labels of the rates that were full in the worlds that limited one of them


@dataclass(frozen=True)
class Explanation:
    consistent: bool | None  # None: cannot be decided
    unexplained: Unexplained | None = None
    why: str = ""


def _options(window: Window | None, rate: Rate, sent: float, done: float) -> tuple[Window | None, ...]:
    """What the request may find for one rate: the window still open, or no live window (None)."""
    if window is None:
        return (None,)
    opened_lo, opened_hi = window[0], window[1]
    if done + EDGE < opened_lo + rate.window:
        return (window,)
    if sent - EDGE >= opened_hi + rate.window:
        return (None,)
    return (window, None)


def _step(state: State, rates: tuple[Rate, ...], sent: float,
          done: float) -> tuple[list[tuple[State, str, int | None]], bool]:
    """Every (next state, outcome, index of the rate that limited) one request can lead to; and whether the
    request fell on the possible expiry of a window (so its order against other requests matters)."""
    options = [_options(w, r, sent, done) for w, r in zip(state, rates)]
    edge = any(len(o) > 1 for o in options)
    outcomes: list[tuple[State, str, int | None]] = []
    for found in product(*options):
        counts = [(w[2], w[3]) if w is not None else (0, 0) for w in found]
        if all(lo <= r.limit - 1 for (lo, _), r in zip(counts, rates)):
            outcomes.append((tuple((w[0], w[1], w[2] + 1, min(w[3], r.limit - 1) + 1) if w is not None
                                   else (sent, done, 1, 1) for w, r in zip(found, rates)), AUTHORIZED, None))
        for full in range(len(rates)):  # limited, rate `full` being the first without room: nothing consumed
            kept: list[Window | None] = []
            for i, (w, r, (lo, hi)) in enumerate(zip(found, rates, counts)):
                if i < full:
                    hi = min(hi, r.limit - 1)
                elif i == full:
                    lo = max(lo, r.limit)
                if lo > hi:
                    break
                kept.append(None if w is None else (w[0], w[1], lo, hi))
            else:
                outcomes.append((tuple(kept), LIMITED, full))
    return outcomes, edge


def predict(requests: Timeline, rates: list[Rate], prior: Prior) -> Prediction:
    """The authorized and limited calls over every world, whatever the client was answered."""
    rates_t = tuple(rates)
    scan = _Scan(requests)
    worlds = {state: (0, 0, 0, 0) for state in prior.states}  # state -> authorized lo, hi, limited lo, hi
    index = 0
    while index < len(requests):
        end = scan.stretch_end(worlds, rates_t, index, len(requests))
        following: dict[State, tuple[int, int, int, int]] = {}
        if end > index:  # decided without branching: one step
            n = end - index
            for state, (a_lo, a_hi, l_lo, l_hi) in worlds.items():
                after, authorized = _through_stretch(state, rates_t, n)
                _merge(following, after, (a_lo + authorized, a_hi + authorized, l_lo + n - authorized,
                                          l_hi + n - authorized))
            worlds, index = following, end
            continue
        sent, done, outcome, _ = scan.request(index)
        for state, totals in worlds.items():
            if outcome == MAYBE:
                _merge(following, state, totals)  # it may never have reached the limiter
            for after, result, _ in _step(state, rates_t, sent, done)[0]:
                a_lo, a_hi, l_lo, l_hi = totals
                added = (a_lo + 1, a_hi + 1, l_lo, l_hi) if result == AUTHORIZED else (a_lo, a_hi, l_lo + 1, l_hi + 1)
                _merge(following, after, added)
        worlds, index = following, index + 1
        if len(worlds) > MAX_WORLDS:
            reaching = len(requests)
            return Prediction((0, reaching), (0, reaching), modelled=False, why_range="too many open possibilities")
    totals = list(worlds.values())
    why = Prediction.why_range if prior.exact else f"{Prediction.why_range}; {prior.source}"
    return Prediction((min(t[0] for t in totals), max(t[1] for t in totals)),
                      (min(t[2] for t in totals), max(t[3] for t in totals)), why_range=why)


def _through_stretch(state: State, rates: tuple[Rate, ...], n: int) -> tuple[State, int]:
    """An exact state after `n` requests that all find its windows open: the first ones authorized while every
    rate has room, the rest limited (consuming nothing). The state after them, and how many were authorized."""
    authorized = min([n, *(max(r.limit - w[2], 0) for w, r in zip(state, rates))])
    return tuple((w[0], w[1], w[2] + authorized, w[3] + authorized) for w in state), authorized


class _Scan:
    """A timeline, with what the model looks up in it: where the next MAYBE is, where each group of requests in
    flight together starts, how many answers were 200 and 429 before each position."""

    def __init__(self, requests: Timeline):
        self.requests = requests
        self.maybe = np.flatnonzero(requests.outcome == MAYBE)
        self._starts: np.ndarray | None = None
        self._seen: tuple[np.ndarray, np.ndarray] | None = None

    def request(self, index: int) -> Request:
        r = self.requests
        return Request(float(r.sent[index]), float(r.done[index]), str(r.outcome[index]), int(r.sender[index]))

    def stretch_end(self, states: Iterable[State], rates: tuple[Rate, ...], index: int, limit: int) -> int:
        """The end of the requests from `index` that no world branches on: every state exact with its windows
        open, no MAYBE, each request answered (with EDGE to spare) before the first of those windows expires."""
        expiry = float("inf")
        for state in states:
            for window, rate in zip(state, rates):
                if window is None or window[2] != window[3]:
                    return index
                expiry = min(expiry, window[0] + rate.window)
        following = np.searchsorted(self.maybe, index)
        if following < len(self.maybe):
            limit = min(limit, int(self.maybe[following]))
        return _first_at_least(self.requests.done, EDGE, expiry, index, limit)

    @property
    def starts(self) -> np.ndarray:
        """The position where each group of requests in flight together starts, and len(requests) at the end."""
        if self._starts is None:
            self._starts = _group_starts(self.requests)
        return self._starts

    @property
    def seen(self) -> tuple[np.ndarray, np.ndarray]:
        """How many answers were 200 (and 429) before each position (len + 1 entries)."""
        if self._seen is None:
            outcome = self.requests.outcome
            self._seen = tuple(np.concatenate(([0], np.cumsum(outcome == o))) for o in (AUTHORIZED, LIMITED))
        return self._seen


def _first_at_least(values: np.ndarray, margin: float, threshold: float, start: int, limit: int) -> int:
    """The first position in [start, limit) where values + margin >= threshold, else limit; looked up in growing
    chunks, so the cost follows the distance found, not the array's length."""
    size = 64
    while start < limit:
        end = min(start + size, limit)
        hits = np.flatnonzero(values[start:end] + margin >= threshold)
        if hits.size:
            return start + int(hits[0])
        start, size = end, size * 2
    return limit


def _group_starts(requests: Timeline) -> np.ndarray:
    """Where each group of requests in flight together starts (a request joins the group before it when it was sent
    while one of the group was in flight, see `_joins`), and len(requests) at the end: decided for the whole
    timeline at once where the answers' running maximum settles it, request by request only where it does not."""
    n = len(requests)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    sent, done, sender = requests.sent, requests.done, requests.sender
    latest = np.maximum.accumulate(done)[:-1]  # the latest answer before each request (from the second on)
    one_sender = sender[0] if (sender == sender[0]).all() else None
    if one_sender is not None:  # every group's latest answer is then `latest`, with one margin
        margin = 0.0 if one_sender != ANY_SENDER else EDGE
        return np.concatenate(([0], np.flatnonzero(sent[1:] >= latest + margin) + 1, [n]))
    starts = sent[1:] >= latest + EDGE  # after every answer so far, whatever the clocks: a new group
    joins = sent[1:] < done[:-1]  # sent before the previous request was answered: the same group
    definite = np.concatenate(([0], np.flatnonzero(starts) + 1))
    added: list[int] = []
    for position in (np.flatnonzero(~starts & ~joins) + 1).tolist():  # in order: each may join the group before it
        first = int(definite[np.searchsorted(definite, position) - 1])
        if not _joins(requests, max(first, added[-1]) if added else first, position):
            added.append(position)
    found = np.union1d(definite, added) if added else definite
    return np.concatenate((found, [n]))


def _merge(worlds: dict[State, tuple[int, int, int, int]], state: State, totals: tuple[int, int, int, int]) -> None:
    known = worlds.get(state)
    worlds[state] = totals if known is None else (min(known[0], totals[0]), max(known[1], totals[1]),
                                                  min(known[2], totals[2]), max(known[3], totals[3]))


class _Pending(NamedTuple):
    """A world inside a group of overlapping requests: its state and what it answered the group so far."""

    state: State
    authorized: int
    limited: int
    edge: bool  # some request of the group fell on a window's possible expiry in this world
    full: frozenset[int]


def explain(requests: Timeline, rates: list[Rate], prior: Prior) -> Explanation:
    """Whether some world gives the client's answers: per group of requests in flight together, the number of
    200s and 429s; a lone request's answer exactly."""
    followed = follow(requests, rates, set(prior.states))
    if followed is None:
        return Explanation(None, why="too many open possibilities to follow")
    return Explanation(followed[1] is None, followed[1])


def follow(requests: Timeline, rates: list[Rate],
           states: set[State]) -> tuple[set[State], Unexplained | None] | None:
    """The states the requests can leave, keeping only the worlds that give their answers; the first group of
    requests no world explains (the states just before it are returned then); None past MAX_WORLDS."""
    rates_t = tuple(rates)
    scan = _Scan(requests)
    starts = scan.starts
    group = 0
    while group < len(starts) - 1:
        index = int(starts[group])
        end = scan.stretch_end(states, rates_t, index, len(requests))
        last_whole = int(np.searchsorted(starts, end, side="right")) - 1  # groups before it lie inside the stretch
        if last_whole > group:
            explained = min(_explained_groups(scan, state, rates_t, group, last_whole) for state in states)
            if explained > group:  # every world gives these groups' answers: one step through them
                n = int(starts[explained]) - index
                states = {_through_stretch(state, rates_t, n)[0] for state in states}
                group = explained
                continue
        members = [scan.request(i) for i in range(index, int(starts[group + 1]))]
        pending = _through_group(states, rates_t, members)
        if pending is None:
            return None
        seen_a = sum(1 for r in members if r.outcome == AUTHORIZED)
        seen_l = sum(1 for r in members if r.outcome == LIMITED)
        kept = {p.state for p in pending
                if p.authorized >= seen_a and p.limited >= seen_l or (p.edge and len(members) > 1)}
        if not kept:
            full = frozenset().union(*(p.full for p in pending))
            return states, Unexplained(
                index + 1, index + len(members), (members[0].sent, members[-1].sent), seen_a, seen_l,
                (min(p.authorized for p in pending), max(p.authorized for p in pending)),
                tuple(rates_t[i].label for i in sorted(full)))
        states = kept
        group += 1
    return states, None


def _explained_groups(scan: _Scan, state: State, rates: tuple[Rate, ...], first: int, end: int) -> int:
    """How far (a group index up to `end`) an exact state that no request of groups first..end-1 branches on
    gives their answers: it authorizes the first requests while every rate has room, and limits the rest."""
    starts = scan.starts[first:end + 1]
    room = min([int(starts[-1] - starts[0]), *(max(r.limit - w[2], 0) for w, r in zip(state, rates))])
    size = np.diff(starts)
    authorized = np.clip(room - (starts[:-1] - starts[0]), 0, size)
    seen_a, seen_l = (seen[starts[1:]] - seen[starts[:-1]] for seen in scan.seen)
    wrong = np.flatnonzero((authorized < seen_a) | (size - authorized < seen_l))
    return first + int(wrong[0]) if wrong.size else end


def _joins(requests: Timeline, first: int, position: int) -> bool:
    """Whether request `position` was sent while one of the group first..position-1 was in flight (by its
    sender's clock; with EDGE to spare against another sender's)."""
    me = requests.sender[position]
    senders = requests.sender[first:position]
    margin = np.where((senders == me) & (me != ANY_SENDER), 0.0, EDGE)
    return bool((requests.sent[position] < requests.done[first:position] + margin).any())


def _through_group(states: Iterable[State], rates: tuple[Rate, ...], group: list[Request]) -> set[_Pending] | None:
    """Every world after the group, with the 200s and 429s it gave the group; None past MAX_WORLDS."""
    pending = {_Pending(state, 0, 0, False, frozenset()) for state in states}
    for sent, done, outcome, _ in group:
        following: set[_Pending] = set()
        for world in pending:
            if outcome == MAYBE:
                following.add(world)
            steps, edge = _step(world.state, rates, sent, done)
            for after, result, full in steps:
                following.add(_Pending(after, world.authorized + (result == AUTHORIZED),
                                       world.limited + (result == LIMITED), world.edge or edge,
                                       world.full | {full} if full is not None else world.full))
        pending = following
        if len(pending) > MAX_WORLDS:
            return None
    return pending


def most_authorized(requests: Timeline, rate: Rate, index: int, prior: Prior) -> tuple[int, int]:
    """(the most calls `rate` lets through over the requests' times, the windows that takes), over the prior's
    states: the room left in a window open before the run, then `limit` per window the timeline could open, each
    opening as early as a request could arrive."""
    best = (0, 0)
    for state in prior.states:
        window = state[index]
        room, opens_from = 0, float("-inf")
        if window is not None:
            room, opens_from = max(rate.limit - window[2], 0), window[0] + rate.window
        windows = _most_windows(requests.sent, requests.done, rate.window, opens_from)
        best = max(best, (room + rate.limit * windows, windows + (window is not None)))
    return best


def _most_windows(sent: np.ndarray, done: np.ndarray, length: float, opens_from: float) -> int:
    """How many windows of `length` the requests (sent, done), sorted by send time, could open, the first no
    earlier than `opens_from`: each opens at the earliest moment a request could arrive after the previous one
    (while one is in flight at that moment, then; else when the next is sent)."""
    count, position, next_open = 0, 0, opens_from
    while True:
        sent_after = int(np.searchsorted(sent, next_open))  # the first request sent at or after next_open
        in_flight = _first_at_least(done, 0.0, next_open, position, sent_after)
        if in_flight < sent_after:
            opening = next_open
        elif sent_after < len(sent):
            opening = float(sent[sent_after])
        else:
            return count
        count += 1
        position, next_open = in_flight, opening + max(length, EDGE)



def in_flight_at_once(requests: Timeline) -> int:
    """The most requests in flight at one moment: their [sent, answered] intervals overlapping (at equal times an
    answer comes before a send)."""
    if not len(requests):
        return 0
    times = np.concatenate((requests.sent, requests.done))
    steps = np.concatenate((np.ones(len(requests)), -np.ones(len(requests))))
    return int(np.cumsum(steps[np.lexsort((steps, times))]).max())


@dataclass(frozen=True)
class Overshoot:
    """A group of requests in flight together that got more answers through than any world had room for, by less
    than the most of them in flight at once: Limitador's check-then-update race (they read the counters before any
    of them was added)."""

    first: int  # 1-based positions in the identity's timeline
    last: int
    over: int  # answers through beyond the most any world lets through
    in_flight: int  # the most of them in flight at once
    limits: tuple[str, ...]  # labels of the rates that were full in the worlds that limited one of them


def explain_overshoot(requests: Timeline, rates: list[Rate], prior: Prior) -> tuple[Explanation, tuple[Overshoot, ...]]:
    """`explain`, reading a group the worlds let at least one of, but fewer than it got through, as an overshoot
    when the excess is below the most of its requests in flight at once: the worlds after it are those that let the
    most of it through, every counter higher by the excess (raced requests are added to every counter), and the
    rest of the timeline is explained from there. The explanation of what is left, and the overshoots."""
    rates_t = tuple(rates)
    states, offset, found = set(prior.states), 0, []
    while True:
        followed = follow(requests, rates, states)
        if followed is None:
            return Explanation(None, why="too many open possibilities to follow"), tuple(found)
        before, odd = followed
        if odd is None:
            return Explanation(True), tuple(found)
        positions = np.arange(len(requests))
        group = requests.where((positions >= odd.first - 1) & (positions < odd.last))
        over, at_once = odd.authorized - odd.possible[1], in_flight_at_once(group)
        if odd.first == odd.last or odd.possible[1] < 1 or not 0 < over < at_once:
            moved = Unexplained(odd.first + offset, odd.last + offset, odd.sent, odd.authorized, odd.limited,
                                odd.possible, odd.full)
            return Explanation(False, moved), tuple(found)
        found.append(Overshoot(odd.first + offset, odd.last + offset, over, at_once, odd.full))
        members = [Request(float(s), float(d), str(o), int(u))
                   for s, d, o, u in zip(group.sent, group.done, group.outcome, group.sender)]
        pending = _through_group(before, rates_t, members)
        if pending is None:
            return Explanation(None, why="too many open possibilities to follow"), tuple(found)
        states = {tuple(None if w is None else (w[0], w[1], w[2] + over, w[3] + over) for w in p.state)
                  for p in pending if p.authorized == odd.possible[1]}
        requests, offset = requests.where(positions >= odd.last), offset + odd.last
