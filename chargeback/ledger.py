"""The Ledger: what the client saw, per identity, merged exactly across Locust workers."""
from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .plan import Plan, Price

# Statuses the timeline records besides HTTP ones
NO_ANSWER = 0  # sent on a connection, but no answer came (timeout, reset, stopped while waiting)
NOT_CONNECTED = -1  # no connection was made (refused, unreachable): it never reached the gateway
MODEL_429 = 1429  # a 429 whose body is not Kuadrant's `Too Many Requests`: the model server's, after the limiter
#                   had counted the request as authorized
LIMITER_TIMEOUT = 0.1  # seconds: the gateway's rate-limit call gives up (and fails open) after this
ANY_SENDER = -1  # the sender of a request whose simulated user is not known (its clock may differ from the others')
COUNTS = ("sent", "authorized", "limited", "rejected", "errors", "prompt_tokens", "completion_tokens", "total_tokens")
# Per model (the request's `model`, "" when none): authorized calls, answers that reported usage, and their tokens
MODEL_COUNTS = ("calls", "reports", "prompt_tokens", "completion_tokens", "total_tokens")

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
    the limiter (AUTHORIZED, LIMITED, NOT_REACHED, DECIDED or MAYBE), which simulated user sent it, and the tokens
    its answer reported (NO_REPORT for none; all NO_REPORT when built from tuples)."""

    sent: np.ndarray
    done: np.ndarray
    outcome: np.ndarray
    sender: np.ndarray
    tokens: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.tokens is None:
            object.__setattr__(self, "tokens", np.full(len(self.sent), NO_REPORT, dtype=np.int32))

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
        return Timeline(self.sent[keep], self.done[keep], self.outcome[keep], self.sender[keep], self.tokens[keep])

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


COLUMNS = (("sent", "d"), ("done", "d"), ("status", "h"), ("sender", "i"), ("tokens", "i"))  # 26 bytes a request
NO_REPORT = -1  # the tokens column of an answer that reported no usage


def _columns() -> tuple[array, ...]:
    """Empty request columns: sent and answered (epoch s, float64), status (int16), sender (int32), the tokens the
    answer's usage reported (int32, NO_REPORT when it had none)."""
    return tuple(array(typecode) for _, typecode in COLUMNS)


NO_HEADER = -1  # a rate-limit header column of an answer that carried none


@dataclass
class RateHeaders:
    """Limitador's rate-limit headers (DRAFT_VERSION_03) of one identity's answers, one row per request beside the
    columns (NO_HEADER where an answer carried none): X-RateLimit-Remaining (int64), X-RateLimit-Reset (seconds,
    int32) and X-RateLimit-Limit as an index (int16) into `limits`, the distinct texts seen. 14 bytes a request,
    kept only for identities whose answers carried them."""

    remaining: array = field(default_factory=lambda: array("q"))
    reset: array = field(default_factory=lambda: array("i"))
    limit: array = field(default_factory=lambda: array("h"))
    limits: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.remaining)

    def append(self, remaining: int, reset: int, limit: str) -> None:
        try:
            index = self.limits.index(limit)
        except ValueError:
            index = len(self.limits)
            self.limits.append(limit)
        self.remaining.append(remaining)
        self.reset.append(reset)
        self.limit.append(index)

    def pad(self, rows: int) -> None:
        """NO_HEADER rows up to `rows` rows."""
        missing = max(rows - len(self), 0)
        for column in (self.remaining, self.reset, self.limit):
            column.extend([NO_HEADER] * missing)

    def extend(self, other: RateHeaders) -> None:
        """Other's rows after these (its limit texts renumbered into these)."""
        for text in other.limits:
            if text not in self.limits:
                self.limits.append(text)
        renumber = np.array([self.limits.index(t) for t in other.limits] + [NO_HEADER], dtype=np.int16)
        self.remaining.extend(other.remaining)
        self.reset.extend(other.reset)
        self.limit.frombytes(renumber[np.frombuffer(other.limit, dtype=np.int16)].tobytes())

    def to_dict(self) -> dict[str, Any]:
        return {"remaining": self.remaining.tobytes(), "reset": self.reset.tobytes(), "limit": self.limit.tobytes(),
                "limits": list(self.limits)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateHeaders:
        headers = cls(limits=list(data["limits"]))
        for name in ("remaining", "reset", "limit"):
            getattr(headers, name).frombytes(data[name])
        return headers


@dataclass
class Account:
    """One identity's requests as the client saw them: totals, and each request in columns."""

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
    columns: tuple[array, ...] = field(default_factory=_columns, repr=False)
    models: dict[str, list[int]] = field(default_factory=dict)  # model -> MODEL_COUNTS
    rate_headers: RateHeaders | None = field(default=None, repr=False)  # only once an answer carried them

    def note_headers(self, headers: tuple[int, int, str] | None) -> None:
        """The rate-limit headers (remaining, reset or NO_HEADER, limit text) of the request just added, if any."""
        if headers is None and self.rate_headers is None:
            return
        if self.rate_headers is None:
            self.rate_headers = RateHeaders()
        rows = len(self.columns[0])
        self.rate_headers.pad(rows - 1)
        if headers is None:
            self.rate_headers.pad(rows)
        else:
            self.rate_headers.append(*headers)

    def _merge_headers(self, other: Account) -> None:
        """Before the columns are merged: other's header rows after these, NO_HEADER where one side has none."""
        if self.rate_headers is None and other.rate_headers is None:
            return
        mine, theirs = self.rate_headers or RateHeaders(), other.rate_headers or RateHeaders()
        mine.pad(len(self.columns[0]))
        theirs.pad(len(other.columns[0]))
        mine.extend(theirs)
        self.rate_headers = mine

    def model_usage(self) -> dict[str, list[int]]:
        """Per model, the MODEL_COUNTS; an account recorded without them (an older record) has its totals under
        model "" (its reports: the answers whose tokens column holds a report)."""
        if self.models or not (self.authorized or self.total_tokens):
            return self.models
        reports = int(np.count_nonzero(np.frombuffer(self.columns[4], dtype=np.int32) != NO_REPORT))
        return {"": [self.authorized, reports, self.prompt_tokens, self.completion_tokens, self.total_tokens]}

    def cost(self, price: Price) -> float:
        """Each model's calls and tokens at its price."""
        return sum(price.for_model(model).cost(calls, total, prompt, completion)
                   for model, (calls, _, prompt, completion, total) in self.model_usage().items())

    def add(self, sent_at: float, done_at: float, status: int, sender: int, tokens: int = NO_REPORT) -> None:
        sent, done, statuses, senders, reported = self.columns
        sent.append(sent_at)
        done.append(done_at)
        statuses.append(status)
        senders.append(sender)
        reported.append(tokens)

    def entries(self) -> list[tuple[float, float, int, int]]:
        """(sent, answered, status, sender) per request, in the order they were recorded."""
        return list(zip(*(c.tolist() for c in self.columns[:4])))

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

    def send_order(self) -> np.ndarray:
        """The positions of the requests in send order (ties by answer, status, sender): the timeline's order."""
        sent, done, status, sender = (np.frombuffer(c, dtype=c.typecode) for c in self.columns[:4])
        return np.lexsort((sender, status, done, sent))

    def timeline(self, limiter_timeout: float = LIMITER_TIMEOUT) -> Timeline:
        """The requests in send order (ties by answer, status, sender), with their limiter outcomes and reported
        tokens (copies)."""
        sent, done, status, sender, tokens = (np.frombuffer(c, dtype=c.typecode) for c in self.columns)
        order = self.send_order()
        sent, done, status = sent[order], done[order], status[order]
        return Timeline(sent, done, outcomes_of(sent, done, status, limiter_timeout), sender[order], tokens[order])

    def merge(self, other: Account) -> None:
        self._merge_headers(other)
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        firsts = [t for t in (self.first, other.first) if t is not None]
        lasts = [t for t in (self.last, other.last) if t is not None]
        self.first, self.last = (min(firsts), max(lasts)) if firsts else (None, None)
        for mine, theirs in zip(self.columns, other.columns):
            mine.extend(theirs)
        for model, counts in other.models.items():
            tally = self.models.setdefault(model, [0] * len(MODEL_COUNTS))
            tally[:] = [a + b for a, b in zip(tally, counts)]

    def to_dict(self) -> dict[str, Any]:
        """The totals, and the columns as bytes (Locust's messages carry them as they are)."""
        return {**{name: getattr(self, name) for name in ("user", "tier", *COUNTS, "first", "last")},
                "columns": [c.tobytes() for c in self.columns],
                "models": {model: list(counts) for model, counts in self.models.items()},
                **({"rate_headers": self.rate_headers.to_dict()} if self.rate_headers is not None else {})}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Account:
        account = cls(**{k: v for k, v in data.items() if k not in ("columns", "models", "rate_headers")},
                      models={model: list(counts) for model, counts in data.get("models", {}).items()})
        for column, raw in zip(account.columns, data["columns"]):
            column.frombytes(raw)
        if "rate_headers" in data:
            account.rate_headers = RateHeaders.from_dict(data["rate_headers"])
        return account


class Ledger:
    """Accounts by user. `record` never yields, so it is exact under gevent."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def record(self, user: str, tier: str, sent_at: float, done_at: float, status: int,
               usage: tuple[int, int, int] | None = None, sender: int = ANY_SENDER, model: str = "",
               headers: tuple[int, int, str] | None = None) -> None:
        """One request of `user` for `model`, sent by simulated user `sender` (its requests are ordered by one
        clock), with its answer's rate-limit headers (remaining, reset, limit text) if it carried them."""
        account = self.accounts.get(user)
        if account is None:
            account = self.accounts[user] = Account(user, tier)
        account.sent += 1
        columns = classify(status)
        for column in columns:
            setattr(account, column, getattr(account, column) + 1)
        if usage is not None or "authorized" in columns:
            tally = account.models.get(model) or account.models.setdefault(model, [0] * len(MODEL_COUNTS))
            tally[0] += "authorized" in columns
        if usage is not None:
            account.prompt_tokens += usage[0]
            account.completion_tokens += usage[1]
            account.total_tokens += usage[2]
            tally[1] += 1
            tally[2] += usage[0]
            tally[3] += usage[1]
            tally[4] += usage[2]
        if account.first is None or sent_at < account.first:
            account.first = sent_at
        if account.last is None or sent_at > account.last:
            account.last = sent_at
        account.add(sent_at, done_at, status, sender, usage[2] if usage is not None else NO_REPORT)
        account.note_headers(headers)

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
        """Rows per user and per tier: the COUNTS plus cost from the Plan's prices (per model)."""
        users = []
        for account in sorted(self.accounts.values(), key=lambda a: (a.tier, a.user)):
            cost = account.cost(plan.tiers[account.tier].price) if account.tier in plan.tiers else 0.0
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
