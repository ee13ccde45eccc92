"""Limitador's counting semantics: fixed windows that open at the first hit of each counter."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable


@dataclass(frozen=True)
class CounterSpec:
    """One Limitador limit applied to one counter: a rate of a policy limit, for one set of counter values."""

    limit_name: str
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
    remaining: int
    expires_in: float


class Limiter:
    """In-memory counters as Limitador keeps them (a restart forgets everything)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._windows: dict[tuple, _Window] = {}

    def _value(self, spec: CounterSpec, now: float) -> int:
        window = self._windows.get(spec.key)
        return window.value if window is not None and window.expires_at > now else 0

    def check(self, specs: Iterable[CounterSpec]) -> CounterSpec | None:
        """Check every counter: if any is at its limit (or its hits would pass it) return the first such counter
        and add nothing (a limited request consumes no quota); else add each counter's hits and return None."""
        now = self.clock()
        specs = tuple(specs)
        for spec in specs:
            value = self._value(spec, now)
            if value >= spec.max_value or value + spec.hits_on_check > spec.max_value:
                return spec
        for spec in specs:
            self._add(spec, spec.hits_on_check, now)
        return None

    def report(self, specs: Iterable[CounterSpec], hits: int) -> None:
        """Add `hits` without checking (a token limit's report after the response)."""
        now = self.clock()
        for spec in specs:
            self._add(spec, hits, now)

    def _add(self, spec: CounterSpec, delta: int, now: float) -> None:
        """Add to a counter; an expired or new counter opens a fresh window now."""
        if delta > 0:
            window = self._windows.get(spec.key)
            if window is None or window.expires_at <= now:
                self._windows[spec.key] = _Window(spec, delta, now + spec.seconds)
            else:
                window.value += delta

    def counters(self) -> list[CounterState]:
        """The live counters (expired windows are not shown, as in Limitador)."""
        now = self.clock()
        return [
            CounterState(w.spec, w.value, max(w.spec.max_value - w.value, 0), w.expires_at - now)
            for w in self._windows.values() if w.expires_at > now
        ]
