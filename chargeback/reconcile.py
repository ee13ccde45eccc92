"""What the server's counters must have risen by, from the client's ledger: exact where every answer is known,
bounds where requests got no answer or a snapshot was taken while requests were in flight.

A request answered 200 (or a 5xx, or the model server's 429) was counted authorized once, a Kuadrant 429 limited
once; one without an answer but in flight longer than the limiter's timeout was counted once, either way; one cut
off sooner may have been counted once, or not at all; 401/403 and refused connections never reached the limiter.
A snapshot covers a call answered before its first moment, and no call sent after its second.

When a TokenRateLimitPolicy applies beside a RateLimitPolicy, a request makes two limiter calls: the request limits'
and then, if they authorized it, the token check. A 200 is then counted authorized twice, and a 429 limited once,
plus authorized once if it was the token check's (possible unless the token model says it had to pass).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .ledger import AUTHORIZED, DECIDED, LIMITED, LIMITER_TIMEOUT, MAYBE, NOT_REACHED, Timeline

UNBOUNDED = 10**12


@dataclass(frozen=True)
class Counted:
    """Bounds on the calls one identity (or a group) added to the counters between two snapshots."""

    authorized: tuple[int, int]  # answered authorized: certainly counted, possibly counted
    limited: tuple[int, int]
    either: tuple[int, int]  # counted once as authorized or limited: certainly, possibly
    second: tuple[int, int] = (0, 0)  # token checks after a request limit's call that may have been counted
    #                                   authorized (0 certainly, at most this many)

    def __add__(self, other: Counted) -> Counted:
        def add(mine: tuple[int, int], theirs: tuple[int, int]) -> tuple[int, int]:
            return mine[0] + theirs[0], min(mine[1] + theirs[1], UNBOUNDED)

        return Counted(add(self.authorized, other.authorized), add(self.limited, other.limited),
                       add(self.either, other.either), add(self.second, other.second))

    @property
    def total(self) -> tuple[int, int]:
        return (self.authorized[0] + self.limited[0] + self.either[0] + self.second[0],
                min(self.authorized[1] + self.limited[1] + self.either[1] + self.second[1], UNBOUNDED))

    def allows(self, authorized: int, limited: int) -> bool:
        """Whether the server's counts fit: each kind and their sum within bounds (exactly the counts some
        assignment of the open requests gives)."""
        (a_lo, a_hi), (l_lo, l_hi), (_, e_hi), (s_lo, s_hi) = self.authorized, self.limited, self.either, self.second
        low, high = self.total
        return (a_lo + s_lo <= authorized <= a_hi + e_hi + s_hi and l_lo <= limited <= l_hi + e_hi
                and low <= authorized + limited <= high)

    def expected(self, kind: str) -> str:
        """The bounds of one kind as the failure table shows them."""
        lo, hi = self.authorized if kind == "authorized" else self.limited
        if kind == "authorized":
            lo, hi = lo + self.second[0], hi + self.second[1]
        hi = min(hi + self.either[1], UNBOUNDED)
        return str(lo) if lo == hi else f"{lo}.." + ("" if hi >= UNBOUNDED else str(hi))


def counted(timeline: Timeline, covers: tuple[float, float], limiter_timeout: float = LIMITER_TIMEOUT,
            open_ended: bool = False, token_check: np.ndarray | None = None) -> Counted:
    """The bounds for one identity's requests (sent, answered, limiter outcome) against a snapshot covering
    `covers`; `open_ended` when the ledger may lack requests (a lost worker): then only the lower bounds hold.
    `token_check`, when a token limit applies beside request limits: per request, whether its token check may have
    limited it (the token model's answer is not ALLOW)."""
    complete, cutoff = covers
    kept = (timeline.sent <= cutoff) & (timeline.outcome != NOT_REACHED)
    t = timeline.where(kept)
    decided_by = np.where(t.outcome == DECIDED, t.sent + limiter_timeout, t.done)
    sure = (t.outcome != MAYBE) & (decided_by <= complete)
    kind = np.where(t.outcome == MAYBE, DECIDED, t.outcome)

    def bounds(outcome: str) -> tuple[int, int]:
        of_kind = kind == outcome
        certain = int(np.count_nonzero(of_kind & sure))
        return certain, int(np.count_nonzero(of_kind)) + (UNBOUNDED if open_ended else 0)

    if token_check is None:
        return Counted(bounds(AUTHORIZED), bounds(LIMITED), bounds(DECIDED))
    (a_lo, a_hi), second = bounds(AUTHORIZED), token_check[kept] & (t.outcome != AUTHORIZED)
    return Counted((2 * a_lo, min(2 * a_hi, UNBOUNDED)), bounds(LIMITED), bounds(DECIDED),
                   (0, int(np.count_nonzero(second | (t.outcome == MAYBE) | (t.outcome == DECIDED)))
                    + (UNBOUNDED if open_ended else 0)))


def foreign_range(increments: list[tuple[float, float, int]], timeline: Timeline) -> tuple[float, float] | None:
    """When the calls the run did not send were counted: from the first to the last scrape interval (start, end,
    calls counted) in which the server counted more calls than the run had in flight; None if no interval shows it
    (they came in the same intervals as the run's own)."""
    reaching = timeline.reaching()
    extra = [(start, end) for start, end, calls in increments
             if calls > np.count_nonzero((reaching.sent <= end) & (reaching.done > start))]
    return (extra[0][0], extra[-1][1]) if extra else None
