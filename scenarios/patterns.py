"""Traffic patterns: how long a simulated user waits before its next request; written `steady:2/s`,
`bursty:5x10s`, `poisson:3/s` or `none` (back to back) in options and scenario files."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Protocol

from chargeback.plan import parse_window

PATTERN_SYNTAX = "steady:N/s | bursty:NxDURATION | poisson:N/s | none"


class Pattern(Protocol):
    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        """Seconds to wait before request `index` (0-based), `since_last_start` after the previous one started."""

    @property
    def spec(self) -> str:
        """The pattern as it is written."""


@dataclass(frozen=True)
class BackToBack:
    """The next request as soon as the previous answer arrived (the seed's curl loop)."""

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return 0.0

    @property
    def spec(self) -> str:
        return "none"


@dataclass(frozen=True)
class Steady:
    """Constant pacing: `rate` request starts per second, whatever the response time."""

    rate: float

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return 0.0 if index == 0 else max(0.0, 1.0 / self.rate - since_last_start)

    @property
    def spec(self) -> str:
        return f"steady:{self.rate:g}/s"


@dataclass(frozen=True)
class Bursty:
    """Bursts of `size` back-to-back requests, then `idle` seconds of silence."""

    size: int
    idle: float

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return self.idle if index and index % self.size == 0 else 0.0

    @property
    def spec(self) -> str:
        return f"bursty:{self.size}x{self.idle:g}s"


@dataclass(frozen=True)
class Poisson:
    """Request starts as a Poisson process: exponential gaps with mean 1/`rate` seconds."""

    rate: float

    def delay(self, index: int, since_last_start: float, rng: random.Random) -> float:
        return 0.0 if index == 0 else max(0.0, rng.expovariate(self.rate) - since_last_start)

    @property
    def spec(self) -> str:
        return f"poisson:{self.rate:g}/s"


_RATE = re.compile(r"(steady|poisson):(\d+(?:\.\d+)?)/s")
_BURST = re.compile(r"bursty:(\d+)x(.+)")


def parse_pattern(text: str) -> Pattern:
    """The pattern `text` names; ValueError (one line, with the syntax) for anything else."""
    text = str(text).strip()
    if text in ("none", ""):
        return BackToBack()
    rate = _RATE.fullmatch(text)
    if rate and float(rate.group(2)) > 0:
        return (Steady if rate.group(1) == "steady" else Poisson)(float(rate.group(2)))
    burst = _BURST.fullmatch(text)
    if burst and int(burst.group(1)) > 0:
        try:
            return Bursty(int(burst.group(1)), parse_window(burst.group(2)))
        except ValueError:
            pass
    raise ValueError(f"{text!r} is not a pattern ({PATTERN_SYNTAX})")
