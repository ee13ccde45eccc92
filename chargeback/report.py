"""Chargeback reports: usage and cost per user and tier, from a run record or from Prometheus over a time range."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import ledger
from .counters import counter_identity, deduplicated, walk
from .ledger import totals_by
from .plan import Plan, Price
from .prometheus import PrometheusSource
from .record import RunRecord
from .schema import candidate_metrics, detect_schema, schema_named
from .verify import Verification, VerifyError, gather

UNKNOWN_TIER = "(unknown)"
AUTHORIZED, LIMITED, TOKENS = 0, 1, 2  # counter kinds
POINTS = 200  # moments per curve: a report's size does not grow with the run's length


@dataclass
class Usage:
    """One user's usage and cost; None where the source cannot know (a Prometheus range has no client view)."""

    user: str
    group: str
    authorized: int
    limited: int
    cost: float
    sent: int | None = None
    rejected: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    source: str = "server"
    note: str = ""


@dataclass
class Report:
    title: str
    source: str  # where the numbers come from, in words
    currency: str
    users: list[Usage]
    curves: Curves
    flags: list[str] = field(default_factory=list)
    generated: float = field(default_factory=time.time)

    def tiers(self) -> list[dict[str, Any]]:
        return totals_by([asdict(u) for u in self.users], "group", ("authorized", "limited", "total_tokens", "cost"))

    def top(self, n: int) -> list[Usage]:
        """The `n` users with the most authorized calls (then cost, then name)."""
        return sorted(self.users, key=lambda u: (-u.authorized, -u.cost, u.user))[:n]


@dataclass
class Curves:
    """Calls so far at POINTS moments (seconds from the start), per user: authorized and limited."""

    at: np.ndarray
    users: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, changes: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Curves:
        """From each user's changes: (seconds from the start, AUTHORIZED or LIMITED, calls) as columns."""
        end = max((float(times.max()) for times, _, _ in changes.values() if len(times)), default=0.0)
        at = np.linspace(0.0, end, POINTS)
        return cls(at, {user: tuple(_so_far(times[kinds == kind], amounts[kinds == kind], at)
                                    for kind in (AUTHORIZED, LIMITED))
                        for user, (times, kinds, amounts) in changes.items()})

    def total(self, users: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The authorized and limited calls so far of these users together."""
        zero = np.zeros(len(self.at), dtype=np.int64)
        return (sum((self.users[u][0] for u in users if u in self.users), zero),
                sum((self.users[u][1] for u in users if u in self.users), zero))


def _so_far(times: np.ndarray, amounts: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The sum of the amounts whose time is at or before each moment of `at`."""
    order = np.argsort(times, kind="stable")
    running = np.concatenate(([0], np.cumsum(amounts[order])))
    return running[np.searchsorted(times[order], at, side="right")]


def parse_prices(items: list[str], per: str) -> dict[str, float]:
    """`TIER=USD` pairs from the command line; a one-line ValueError naming the bad one."""
    prices = {}
    for item in items:
        tier, _, amount = item.partition("=")
        try:
            prices[tier] = float(amount)
        except ValueError:
            raise ValueError(f"--{per} {item!r}: expected TIER=AMOUNT, e.g. free=0.001") from None
        if not tier or prices[tier] < 0:
            raise ValueError(f"--{per} {item!r}: expected TIER=AMOUNT with an amount >= 0")
    return prices


def price_list(tiers: dict[str, Price], per_call: dict[str, float],
               per_1k_tokens: dict[str, float]) -> dict[str, Price]:
    """The Plan's prices per tier, with command-line overrides."""
    names = set(tiers) | set(per_call) | set(per_1k_tokens)
    return {t: Price(per_call.get(t, tiers.get(t, Price()).per_call),
                     per_1k_tokens.get(t, tiers.get(t, Price()).per_1k_tokens)) for t in names}


def _cost(prices: dict[str, Price], tier: str, calls: int, tokens: int) -> float:
    return prices[tier].cost(calls, tokens) if tier in prices else 0.0


def from_run(run: str, per_call: dict[str, float], per_1k_tokens: dict[str, float],
             prometheus_url: str | None = None) -> Report:
    """Usage from a run record: the server's counters where the record (or Prometheus) has them, checked
    against the ledger; the ledger alone, said so, where it has none."""
    record = RunRecord.load(run)
    plan = record.plan
    tiers = {i.user: i.tier for i in plan.identities}
    prices = price_list({t: v.price for t, v in plan.tiers.items()}, per_call, per_1k_tokens)
    try:
        verification: Verification | None = gather(record.path, prometheus_url=prometheus_url, partial=True)
    except VerifyError:
        verification = None
    users, flags = [], []
    for account in sorted(record.ledger.accounts.values(), key=lambda a: (a.tier, a.user)):
        check = verification.users.get(account.user) if verification else None
        authorized, limited, source, note = account.authorized, account.limited, "ledger", "no server counters"
        if check is not None:
            authorized, limited, source, note = check.server_authorized, check.server_limited, "server", ""
            problems = []
            if not check.counted.allows(authorized, limited) or check.resets:
                problems.append(f"DISAGREES with the ledger: client saw {account.authorized} authorized / "
                                f"{account.limited} limited" +
                                (f"; {check.resets} counter reset(s)" if check.resets else ""))
            wrong = sorted(g for g in check.billed if g is not None and g not in check.allowed_groups)
            if wrong or len(check.billed - {None}) > 1:
                problems.append(f"BILLED under group {' and '.join(sorted(check.billed - {None}))}, the Plan says "
                                f"{' or '.join(sorted(check.allowed_groups))}")
            note = "; ".join(problems)
            flags += [f"{account.user}: {problem}" for problem in problems]
        tier = tiers.get(account.user, account.tier)
        users.append(Usage(
            account.user, check.group if check else tier, authorized, limited,
            _cost(prices, tier, authorized, account.total_tokens), account.sent, account.rejected,
            account.prompt_tokens, account.completion_tokens, account.total_tokens, source, note))
    start = record.meta["started"]
    changes = {}
    for account in record.ledger.accounts.values():
        timeline = account.timeline()
        kinds = np.select([timeline.outcome == ledger.AUTHORIZED, timeline.outcome == ledger.LIMITED],
                          [AUTHORIZED, LIMITED], TOKENS)
        changes[account.user] = (timeline.sent - start, kinds, np.ones(len(kinds), dtype=np.int64))
    where = ("the gateway's counters (snapshots in the run record), checked against the client's ledger"
             if verification else "the client's ledger only: the record holds no server snapshots")
    return Report(f"Chargeback for run {record.meta['run_id']} ({record.meta['scenario']})", where,
                  plan.currency, users, Curves.of(changes), flags)


def from_prometheus(url: str, since: float, plan: Plan, per_call: dict[str, float], per_1k_tokens: dict[str, float],
                    schema: str | None = None, job: str | None = None, now: float | None = None) -> Report:
    """Usage over the last `since` seconds from raw counter samples (restarts handled, no extrapolation)."""
    end = now or time.time()
    start = end - since
    source = PrometheusSource(url, job=job)
    history = source.history(start, end)
    names: dict[str, set[str]] = {}
    for name, labels, _, _ in history:
        names.setdefault(name, set()).update(labels)
    found = schema_named(schema) if schema else detect_schema(names)
    if found is None:
        raise VerifyError(f"Prometheus at {url}: no chargeback metrics with a user label in the last {since:g} s "
                          f"(looked for {', '.join(candidate_metrics())})")
    kinds = {found.authorized: AUTHORIZED, found.limited: LIMITED}
    if found.token_hits:
        kinds[found.token_hits] = TOKENS
    baselines = {(name, key): value for name in kinds
                 for key, (_, value) in deduplicated(source.vector(f'{name}{{user!=""}}', at=start)).items()}
    counters: dict[tuple, tuple[dict[str, str], float, list[tuple[float, float]], int]] = {}
    for name, labels, samples, scrapes in history:
        if name in kinds:
            key = (name, counter_identity(labels))
            increase, _, points = walk(samples, baselines.get(key), scrapes)
            if key not in counters or increase > counters[key][1]:  # copies from several jobs: keep one
                counters[key] = (labels, increase, points, kinds[name])
    tiers = plan.user_groups()
    prices = price_list({t: v.price for t, v in plan.tiers.items()}, per_call, per_1k_tokens)
    per_user: dict[str, list[float]] = {}
    groups: dict[str, str] = {}
    events: dict[str, list[tuple[float, int, int]]] = {}  # user -> (seconds from the start, kind, calls)
    for labels, increase, points, kind in counters.values():
        user = labels[found.user_label]
        per_user.setdefault(user, [0.0, 0.0, 0.0])[kind] += increase
        groups[user] = labels.get(found.group_label) or tiers.get(user, UNKNOWN_TIER)
        previous = 0.0
        for t, total in points if kind != TOKENS else ():
            if total > previous:
                events.setdefault(user, []).append((t - start, kind, int(total - previous)))
            previous = total
    users = [Usage(user, groups[user], round(a), round(l),
                   _cost(prices, tiers.get(user, groups[user]), round(a), round(tokens)),
                   total_tokens=round(tokens) if found.token_hits else None)
             for user, (a, l, tokens) in sorted(per_user.items())]
    curves = Curves.of({user: tuple(np.array(column) for column in zip(*changes)) for user, changes in events.items()})
    tokens = f", tokens from {found.token_hits}" if found.token_hits else ", no token counter (calls priced only)"
    return Report(f"Chargeback, last {since / 3600:g} h", f"Prometheus at {url}: raw counter samples "
                  f"({found.name} schema{tokens}), restarts handled, no extrapolation", plan.currency, users, curves)
