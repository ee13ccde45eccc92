"""Traffic patterns: how long a simulated user waits before its next request."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol


class Pattern(Protocol):
    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        """Seconds to wait before request `index` (0-based), `since_last_start` after the previous one started."""


@dataclass(frozen=True)
class BackToBack:
    """The next request as soon as the previous answer arrived (the seed's curl loop)."""

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return 0.0


@dataclass(frozen=True)
class Steady:
    """Constant pacing: a request every `interval` seconds, whatever the response time."""

    interval: float

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return 0.0 if index == 0 else max(0.0, self.interval - since_last_start)


@dataclass(frozen=True)
class Bursty:
    """Bursts of `size` back-to-back requests, then `idle` seconds of silence."""

    size: int
    idle: float

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return self.idle if index and index % self.size == 0 else 0.0


@dataclass(frozen=True)
class Poisson:
    """Request starts as a Poisson process: exponential gaps with mean 1/`rate` seconds."""

    rate: float

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return 0.0 if index == 0 else max(0.0, rng.expovariate(self.rate) - since_last_start)
