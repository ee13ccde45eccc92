"""The Ledger: what the client saw, per identity, merged exactly across Locust workers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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


def limiter_outcome(sent: float, done: float, status: int, limiter_timeout: float = LIMITER_TIMEOUT) -> str:
    """AUTHORIZED, LIMITED, NOT_REACHED, DECIDED or MAYBE for one request of the timeline."""
    if status in (401, 403, NOT_CONNECTED):
        return NOT_REACHED
    if status == 429:
        return LIMITED
    if status == NO_ANSWER:
        return DECIDED if done - sent > limiter_timeout else MAYBE
    return AUTHORIZED


@dataclass
class Account:
    """One identity's requests as the client saw them."""

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
    timeline: list[tuple[float, float, int, int]] = field(default_factory=list)  # (sent, answered, status, sender)

    @property
    def unanswered(self) -> int:
        """Requests sent on a connection that got no answer."""
        return self.statuses().count(NO_ANSWER)

    def statuses(self) -> list[int]:
        return [entry[2] for entry in self.timeline]

    def last_answer(self) -> float | None:
        """When this identity's last answer (or give-up) came (epoch s)."""
        return max((entry[1] for entry in self.timeline), default=None)

    def outcomes(self, limiter_timeout: float = LIMITER_TIMEOUT) -> list[tuple[float, float, str, int]]:
        """(sent, answered, limiter outcome, sender) per request, in send order."""
        return [(sent, done, limiter_outcome(sent, done, status, limiter_timeout), sender)
                for sent, done, status, sender in sorted(self.timeline)]

    def merge(self, other: Account) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        firsts = [t for t in (self.first, other.first) if t is not None]
        lasts = [t for t in (self.last, other.last) if t is not None]
        self.first, self.last = (min(firsts), max(lasts)) if firsts else (None, None)
        self.timeline.extend(other.timeline)


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
        account.timeline.append((sent_at, done_at, status, sender))  # a tuple of atoms: the garbage collector skips it

    def drain(self) -> list[dict[str, Any]]:
        """Everything recorded since the last drain, as JSON-able data; the ledger starts empty again."""
        data = self.to_list()
        self.accounts = {}
        return data

    def merge(self, data: list[dict[str, Any]]) -> None:
        """Add a drained delta (from a worker) into this ledger."""
        for item in data:
            timeline = [(*t[:3], t[3] if len(t) > 3 else ANY_SENDER) for t in item["timeline"]]
            other = Account(**{**item, "timeline": timeline})
            mine = self.accounts.get(other.user)
            if mine is None:
                self.accounts[other.user] = other
            else:
                mine.merge(other)

    def to_list(self) -> list[dict[str, Any]]:
        return [asdict(a) for a in sorted(self.accounts.values(), key=lambda a: a.user)]

    @classmethod
    def from_list(cls, data: list[dict[str, Any]]) -> Ledger:
        ledger = cls()
        ledger.merge(data)
        for account in ledger.accounts.values():
            account.timeline.sort()
        return ledger

    def last_answer(self) -> float | None:
        """When the run's last answer arrived (epoch s)."""
        return max((t[1] for a in self.accounts.values() for t in a.timeline), default=None)

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
