"""The Ledger: what the client saw, per identity, merged exactly across Locust workers."""
from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plan import Plan

# Statuses the timeline records besides HTTP ones
NO_ANSWER = 0  # sent on a connection, but no answer came (timeout, reset, stopped while waiting)
NOT_CONNECTED = -1  # no connection was made (refused, unreachable): it never reached the gateway
MODEL_429 = 1429  # a 429 whose body is not Kuadrant's `Too Many Requests`: the model server's, after the limiter
#                   had counted the request as authorized
LIMITER_TIMEOUT = 0.1  # seconds: the gateway's rate-limit call gives up (and fails open) after this
ANY_SENDER = -1  # the sender of a request whose simulated user is not known (its clock may differ from the others')
COUNTS = ("sent", "authorized", "limited", "rejected", "errors", "prompt_tokens", "completion_tokens", "total_tokens")

# What became of a request at the limiter, as far as the client can tell
AUTHORIZED, LIMITED, NOT_REACHED = "A", "L", "N"
DECIDED = "D"  # no answer, but in flight longer than the limiter's timeout: the limiter counted it, either way
MAYBE = "M"  # no answer, and cut off sooner: it may or may not have reached the limiter


def classify(status: int) -> tuple[str, ...]:
    """The ledger columns one answer adds to, besides `sent`.

    Anything but 401/403 (Authorino), Kuadrant's 429 (Limitador) or no answer passed the limiter: it is authorized,
    and a 5xx or the model server's own 429 is also an error (Limitador counted it as authorized before).
    """
    if status in (NO_ANSWER, NOT_CONNECTED):
        return ("errors",)
    if status in (401, 403):
        return ("rejected",)
    if status == 429:
        return ("limited",)
    return ("authorized", "errors") if status >= 500 or status == MODEL_429 else ("authorized",)


@dataclass(frozen=True)
class Timeline:
    """One identity's requests as columns, in send order: when each was sent and answered, what became of it at
    the limiter (AUTHORIZED, LIMITED, NOT_REACHED, DECIDED or MAYBE), and which simulated user sent it."""

    sent: np.ndarray
    done: np.ndarray
    outcome: np.ndarray
    sender: np.ndarray

    @classmethod
    def of(cls, requests: Iterable[tuple[float, float, str, int]]) -> Timeline:
        """From (sent, answered, outcome, sender) tuples, in any order."""
        rows = sorted(requests)
        return cls(np.array([r[0] for r in rows], dtype=np.float64), np.array([r[1] for r in rows], dtype=np.float64),
                   np.array([r[2] for r in rows], dtype="<U1"), np.array([r[3] for r in rows], dtype=np.int32))

    def __len__(self) -> int:
        return len(self.sent)

    def where(self, keep: np.ndarray) -> Timeline:
        """The requests `keep` (a boolean mask) selects."""
        return Timeline(self.sent[keep], self.done[keep], self.outcome[keep], self.sender[keep])

    def reaching(self) -> Timeline:
        """The requests that reached, or may have reached, the limiter."""
        return self.where(self.outcome != NOT_REACHED)


def outcomes_of(sent: np.ndarray, done: np.ndarray, status: np.ndarray,
                limiter_timeout: float = LIMITER_TIMEOUT) -> np.ndarray:
    """What became of each request at the limiter: AUTHORIZED, LIMITED, NOT_REACHED (401/403, no connection),
    DECIDED (no answer, but in flight longer than the limiter's timeout) or MAYBE (no answer, cut off sooner)."""
    unanswered = np.where(done - sent > limiter_timeout, DECIDED, MAYBE)
    not_reached = (status == 401) | (status == 403) | (status == NOT_CONNECTED)
    return np.select([not_reached, status == 429, status == NO_ANSWER], [NOT_REACHED, LIMITED, unanswered],
                     AUTHORIZED).astype("<U1")


COLUMNS = (("sent", "d"), ("done", "d"), ("status", "h"), ("sender", "i"))  # per request: 22 bytes


def _columns() -> tuple[array, array, array, array]:
    """Empty request columns: sent and answered (epoch s, float64), status (int16), sender (int32)."""
    return tuple(array(typecode) for _, typecode in COLUMNS)  # type: ignore[return-value]


@dataclass
class Account:
    """One identity's requests as the client saw them: totals, and each request in four columns."""

    user: str
    tier: str
    sent: int = 0
    authorized: int = 0
    limited: int = 0
    rejected: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    first: float | None = None
    last: float | None = None
    columns: tuple[array, array, array, array] = field(default_factory=_columns, repr=False)

    def add(self, sent_at: float, done_at: float, status: int, sender: int) -> None:
        sent, done, statuses, senders = self.columns
        sent.append(sent_at)
        done.append(done_at)
        statuses.append(status)
        senders.append(sender)

    def entries(self) -> list[tuple[float, float, int, int]]:
        """(sent, answered, status, sender) per request, in the order they were recorded."""
        return list(zip(*(c.tolist() for c in self.columns)))

    @property
    def unanswered(self) -> int:
        """Requests sent on a connection that got no answer."""
        return int(np.count_nonzero(self.statuses() == NO_ANSWER))

    def statuses(self) -> np.ndarray:
        """Each request's status, a copy (a view would stop the column from growing)."""
        return np.frombuffer(self.columns[2], dtype=np.int16).copy()

    def last_answer(self) -> float | None:
        """When this identity's last answer (or give-up) came (epoch s)."""
        return float(np.frombuffer(self.columns[1]).max()) if self.columns[1] else None

    def timeline(self, limiter_timeout: float = LIMITER_TIMEOUT) -> Timeline:
        """The requests in send order (ties by answer, status, sender), with their limiter outcomes (copies)."""
        sent, done, status, sender = (np.frombuffer(c, dtype=c.typecode) for c in self.columns)
        order = np.lexsort((sender, status, done, sent))
        sent, done, status = sent[order], done[order], status[order]
        return Timeline(sent, done, outcomes_of(sent, done, status, limiter_timeout), sender[order])

    def merge(self, other: Account) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        firsts = [t for t in (self.first, other.first) if t is not None]
        lasts = [t for t in (self.last, other.last) if t is not None]
        self.first, self.last = (min(firsts), max(lasts)) if firsts else (None, None)
        for mine, theirs in zip(self.columns, other.columns):
            mine.extend(theirs)

    def to_dict(self) -> dict[str, Any]:
        """The totals, and the columns as bytes (Locust's messages carry them as they are)."""
        return {**{name: getattr(self, name) for name in ("user", "tier", *COUNTS, "first", "last")},
                "columns": [c.tobytes() for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        account = cls(**{k: v for k, v in data.items() if k != "columns"})
        for column, raw in zip(account.columns, data["columns"]):
            column.frombytes(raw)
        return account


class Ledger:
    """Accounts by user. `record` never yields, so it is exact under gevent."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def record(self, user: str, tier: str, sent_at: float, done_at: float, status: int,
               usage: tuple[int, int, int] | None = None, sender: int = ANY_SENDER) -> None:
        """One request of `user`, sent by simulated user `sender` (its requests are ordered by one clock)."""
        account = self.accounts.get(user)
        if account is None:
            account = self.accounts[user] = Account(user, tier)
        account.sent += 1
        for column in classify(status):
            setattr(account, column, getattr(account, column) + 1)
        if usage is not None:
            account.prompt_tokens += usage[0]
            account.completion_tokens += usage[1]
            account.total_tokens += usage[2]
        if account.first is None or sent_at < account.first:
            account.first = sent_at
        if account.last is None or sent_at > account.last:
            account.last = sent_at
        account.add(sent_at, done_at, status, sender)

    def drain(self) -> list[dict[str, Any]]:
        """Everything recorded since the last drain (the accounts with their columns as bytes); the ledger
        starts empty again. Its size is that of the requests since the last drain, whatever the run's length."""
        data = [a.to_dict() for a in self.accounts.values()]
        self.accounts = {}
        return data

    def merge(self, data: list[dict[str, Any]]) -> None:
        """Add a drained delta (from a worker) into this ledger."""
        for item in data:
            other = Account.from_dict(item)
            mine = self.accounts.get(other.user)
            if mine is None:
                self.accounts[other.user] = other
            else:
                mine.merge(other)

    def requests(self) -> int:
        return sum(len(a.columns[0]) for a in self.accounts.values())

    def slowest_gateway_answer(self) -> float:
        """The longest an answer the gateway gives before the model (401, 403, Kuadrant's 429) took in this run:
        how long a request could take to reach the limiter (queued in a saturated gateway, say)."""
        slowest = 0.0
        for account in self.accounts.values():
            status = account.statuses()
            before_model = (status == 401) | (status == 403) | (status == 429)
            if before_model.any():
                took = np.frombuffer(account.columns[1]) - np.frombuffer(account.columns[0])
                slowest = max(slowest, float(took[before_model].max()))
        return slowest

    def last_answer(self) -> float | None:
        """When the run's last answer arrived (epoch s)."""
        return max((t for a in self.accounts.values() if (t := a.last_answer()) is not None), default=None)

    def table(self, plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Rows per user and per tier: the COUNTS plus cost from the Plan's prices."""
        users = []
        for account in sorted(self.accounts.values(), key=lambda a: (a.tier, a.user)):
            price = plan.tiers[account.tier].price if account.tier in plan.tiers else None
            cost = price.cost(account.authorized, account.total_tokens) if price else 0.0
            users.append({"user": account.user, "tier": account.tier,
                          **{name: getattr(account, name) for name in COUNTS}, "cost": round(cost, 6)})
        tiers = totals_by(users, "tier", COUNTS + ("cost",))
        for total in tiers:
            total["cost"] = round(total["cost"], 6)
        return users, tiers


def totals_by(rows: list[dict[str, Any]], key: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per value of `key` (sorted): how many rows it has, and the sums of `fields` (None counts 0)."""
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        total = totals.setdefault(row[key], {key: row[key], "users": 0, **{f: 0 for f in fields}})
        total["users"] += 1
        for name in fields:
            total[name] += row[name] or 0
    return [totals[k] for k in sorted(totals)]
