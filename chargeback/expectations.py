"""The window model: what Limitador should have counted for one identity, from the client's timeline.

Limitador keeps a fixed window per counter that opens at the first hit after expiry; a request is allowed iff
every counter that applies has room, and a limited request consumes nothing. A request reaches the limiter at
an unknown moment between its send and its answer; when that interval straddles a window's possible expiry, or
when a request got no answer (it may never have reached the limiter), the model follows both possibilities and
states a range instead of one number.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from .ledger import TRANSPORT_ERROR

EDGE = 0.005  # seconds of margin around a window's expiry before the model calls a request decided
MAX_WORLDS = 512


@dataclass(frozen=True)
class Rate:
    limit_name: str
    limit: int
    window: float

    @property
    def label(self) -> str:
        return f"{self.limit_name} ({self.limit} per {self.window:g} s)"


@dataclass(frozen=True)
class Expectation:
    """Authorized and limited calls as ranges (lo == hi where the timeline decides them); the most windows each
    rate could have opened."""

    authorized: tuple[int, int]
    limited: tuple[int, int]
    windows: dict[str, int]  # rate label -> the most windows the timeline could have opened
    modelled: bool = True  # False when too many possibilities were open to follow
    why_range: str = "edge of a window"  # what leaves the count open, where it is

    @property
    def decided(self) -> bool:
        return self.modelled and self.authorized[0] == self.authorized[1]


@dataclass(frozen=True)
class _World:
    authorized: int
    limited: int
    windows: tuple[tuple[float, float, int] | None, ...]  # per rate: (opened no earlier, no later, count)
    opened: tuple[int, ...]


def _window_options(state: tuple[float, float, int] | None, window: float, sent: float, done: float) -> tuple[bool, ...]:
    """Whether the request may find this window still open (True) or expired (False)."""
    if state is None:
        return (False,)
    opened_lo, opened_hi, _ = state
    if done + EDGE < opened_lo + window:
        return (True,)
    if sent - EDGE >= opened_hi + window:
        return (False,)
    return (True, False)


def _step(world: _World, rates: tuple[Rate, ...], sent: float, done: float) -> set[_World]:
    outcomes = set()
    for still_open in product(*(_window_options(s, r.window, sent, done) for s, r in zip(world.windows, rates))):
        counts = [s[2] if is_open and s else 0 for s, is_open in zip(world.windows, still_open)]
        if all(count < rate.limit for count, rate in zip(counts, rates)):
            windows = tuple((s[0], s[1], s[2] + 1) if is_open and s else (sent, done, 1)
                            for s, is_open in zip(world.windows, still_open))
            opened = tuple(n + (not is_open) for n, is_open in zip(world.opened, still_open))
            outcomes.add(_World(world.authorized + 1, world.limited, windows, opened))
        else:  # limited: nothing consumed; a window found expired stays expired
            windows = tuple(s if is_open else None for s, is_open in zip(world.windows, still_open))
            outcomes.add(_World(world.authorized, world.limited + 1, windows, world.opened))
    return outcomes


def expect(timeline: list[tuple[float, float, int]], rates: list[Rate]) -> Expectation:
    """The expectation for one identity; `timeline` holds (sent, answered, status) per request."""
    rates_t = tuple(rates)
    worlds = {_World(0, 0, (None,) * len(rates_t), (0,) * len(rates_t))}
    reaching = [(s, d, status) for s, d, status in sorted(timeline) if status not in (401, 403)]
    for sent, done, status in reaching:
        next_worlds: set[_World] = set()
        for world in worlds:
            if status == TRANSPORT_ERROR:
                next_worlds.add(world)  # it may never have reached the limiter
            next_worlds |= _step(world, rates_t, sent, done)
        worlds = next_worlds
        if len(worlds) > MAX_WORLDS:
            return _unmodelled(len(reaching), rates_t)
    return Expectation(
        authorized=(min(w.authorized for w in worlds), max(w.authorized for w in worlds)),
        limited=(min(w.limited for w in worlds), max(w.limited for w in worlds)),
        windows={r.label: max(w.opened[i] for w in worlds) for i, r in enumerate(rates_t)},
    )


def _unmodelled(reaching: int, rates: tuple[Rate, ...]) -> Expectation:
    """Too many open possibilities: only the trivial bounds."""
    return Expectation((0, reaching), (0, reaching), {r.label: reaching for r in rates}, modelled=False,
                       why_range="too many open possibilities to follow")


def under_token_limits(e: Expectation) -> Expectation:
    """A token limit may also have limited requests, and the model does not follow tokens: only the request
    limits' upper bound on authorized calls still holds."""
    reaching = e.authorized[1] + e.limited[1]
    return Expectation((0, e.authorized[1]), (e.limited[0], reaching), e.windows, e.modelled,
                       why_range="token limits apply, which the model does not follow")
