"""Limitador's counting semantics (its in-memory storage): fixed windows per counter, opened when first needed."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

U64 = 2**64


@dataclass(frozen=True)
class CounterSpec:
    """One Limitador limit applied to one counter: a rate of a policy limit, for one set of counter values."""

    limit_name: str  # the limit's identifier (kuadrant-operator's descriptor key)
    rate_index: int
    values: tuple[str, ...]
    max_value: int
    seconds: float
    hits_on_check: int = 1  # 1 for a request limit; 0 for a token limit, whose hits are reported after the response

    @property
    def key(self) -> tuple[str, int, tuple[str, ...]]:
        return self.limit_name, self.rate_index, self.values


@dataclass
class _Window:
    spec: CounterSpec
    value: int
    expires_at: float


@dataclass(frozen=True)
class CounterState:
    spec: CounterSpec
    value: int
    remaining: int  # max_value - value as Limitador's u64: a counter past its max wraps to a huge number
    expires_in: float


class Limiter:
    """In-memory counters as Limitador keeps them (a restart forgets everything).

    A request is allowed iff value + delta <= max_value for every counter (a token check counts as 1 and opens
    nothing: its window starts at the first report). Every counter is checked, also after one over its limit (the
    `limitador` crate's in-memory `check_and_update`): a qualified counter (one with variables) that does not exist
    yet is created at value 0, expiring a window from now, when it is checked, even if another counter limits the
    request. An expired counter reads 0; the next allowed update sets value = delta and expiry = now + window. A
    limited request updates nothing. A report of 0 hits is charged as 1 (limitador-server's Report).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._windows: dict[tuple, _Window] = {}

    def check(self, specs: Iterable[CounterSpec]) -> CounterSpec | None:
        """The first counter that limits the request (nothing is added), or None after adding each counter's hits."""
        now = self.clock()
        specs = tuple(specs)
        limiting = self._read(specs, now)
        if limiting is None:
            for spec in specs:
                self._add(spec, spec.hits_on_check, now)
        return limiting

    def decide(self, specs: Iterable[CounterSpec]) -> CounterSpec | None:
        """`check`'s reading alone: the first counter that limits the request, adding nothing (a new qualified counter
        is created, as `check` creates it). With `commit` later, concurrent requests can all read the same values:
        Limitador's check-then-update race, which lets them overshoot a limit."""
        return self._read(tuple(specs), self.clock())

    def _read(self, specs: tuple[CounterSpec, ...], now: float) -> CounterSpec | None:
        """Read every counter, creating each new qualified one at 0; the first one the request would exceed."""
        limiting = None
        for spec in specs:
            window = self._windows.get(spec.key)
            if window is None and spec.values and spec.hits_on_check:
                window = self._windows[spec.key] = _Window(spec, 0, now + spec.seconds)
            value = window.value if window is not None and window.expires_at > now else 0
            if limiting is None and value + max(spec.hits_on_check, 1) > spec.max_value:
                limiting = spec
        return limiting

    def commit(self, specs: Iterable[CounterSpec]) -> None:
        """`check`'s update alone, for a request `decide` let through: each counter's hits, added now."""
        now = self.clock()
        for spec in specs:
            self._add(spec, spec.hits_on_check, now)

    def report(self, specs: Iterable[CounterSpec], hits: int) -> None:
        """Add `hits` without checking (a token limit's report after the response); 0 hits are charged as 1."""
        now = self.clock()
        for spec in specs:
            self._add(spec, hits or 1, now)

    def _add(self, spec: CounterSpec, delta: int, now: float) -> None:
        """Add to a counter; an expired or new counter opens a fresh window now."""
        if delta > 0:
            window = self._windows.get(spec.key)
            if window is None or window.expires_at <= now:
                self._windows[spec.key] = _Window(spec, delta, now + spec.seconds)
            else:
                window.value += delta

    def states(self, specs: Iterable[CounterSpec], allowed: bool) -> list[CounterState]:
        """Each counter as Limitador annotates it for the answer's rate-limit headers, read now (between `decide` and
        `commit`): its value plus this request's hits when `allowed`; one without a live window reads 0, with a whole
        window ahead."""
        now = self.clock()
        states = []
        for spec in specs:
            window = self._windows.get(spec.key)
            live = window is not None and window.expires_at > now
            value = (window.value if live else 0) + (spec.hits_on_check if allowed else 0)
            states.append(CounterState(spec, value, (spec.max_value - value) % U64,
                                       window.expires_at - now if live else spec.seconds))
        return states

    def forget(self, specs: Iterable[CounterSpec]) -> None:
        """Forget these counters' windows (a fault: Limitador never does this by itself)."""
        for spec in specs:
            self._windows.pop(spec.key, None)

    def clear(self) -> None:
        """Forget every counter and window."""
        self._windows.clear()

    def counters(self) -> list[CounterState]:
        """The live counters (expired windows are not shown, as in Limitador)."""
        now = self.clock()
        return [CounterState(w.spec, w.value, (w.spec.max_value - w.value) % U64, w.expires_at - now)
                for w in self._windows.values() if w.expires_at > now]
