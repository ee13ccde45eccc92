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
from .prometheus import PrometheusAuth, PrometheusSource
from .record import RunRecord
from .schema import MODEL_LABEL, candidate_metrics, detect_schema, schema_named
from .verify import SourceDenied, UserCheck, Verification, VerifyError, gather

UNKNOWN_TIER = "(unknown)"
SERVER_DIFFERENCE = "(server difference)"  # the calls the server counted beyond (or short of) the ledger's, any model
AUTHORIZED, LIMITED, TOKENS, REPORTS = 0, 1, 2, 3  # counter kinds
COST_DIGITS = 9  # costs are rounded to a billionth of the currency
POINTS = 200  # moments per curve: a report's size does not grow with the run's length


@dataclass
class ModelUsage:
    """One user's usage of one model (the request's `model`; "" when it named none) and its cost."""

    model: str
    calls: int
    reports: int | None  # answers that reported usage (None: a Prometheus range cannot know)
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int
    cost: float


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
    reports: int | None = None  # token reports the server counted (report_calls), where it serves them
    models: list[ModelUsage] = field(default_factory=list)


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
        rows = [{k: v for k, v in asdict(u).items() if k != "models"} for u in self.users]
        return _rounded(totals_by(rows, "group", ("authorized", "limited", "total_tokens", "cost")))

    def model_totals(self) -> list[dict[str, Any]]:
        """Per tier and model: how many users, calls, tokens and cost."""
        rows = [{"tier_model": (u.group, m.model), **asdict(m)} for u in self.users for m in u.models]
        totals = totals_by(rows, "tier_model", ("calls", "reports", "prompt_tokens", "completion_tokens",
                                                "total_tokens", "cost"))
        rows = []
        for total in totals:
            group, model = total.pop("tier_model")
            rows.append({"group": group, "model": model, **total})
        return _rounded(rows)

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


def _rounded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with their cost rounded to COST_DIGITS (sums of floats drift in the last digits)."""
    for row in rows:
        row["cost"] = round(row["cost"], COST_DIGITS)
    return rows


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


def price_list(tiers: dict[str, Price], overrides: dict[str, dict[str, float]]) -> dict[str, Price]:
    """The Plan's prices per tier with command-line overrides (unit -> tier -> amount), which set the unit for
    every model of the tier alike."""
    names = dict.fromkeys([*tiers, *(tier for by_tier in overrides.values() for tier in by_tier)])
    return {t: tiers.get(t, Price()).replace(**{unit: by_tier[t] for unit, by_tier in overrides.items()
                                                 if t in by_tier}) for t in names}


def model_usage(account: ledger.Account, price: Price) -> list[ModelUsage]:
    """The account's usage per model, each at its model's price."""
    return [ModelUsage(model, calls, reports, prompt, completion, total,
                       round(price.for_model(model).cost(calls, total, prompt, completion), COST_DIGITS))
            for model, (calls, reports, prompt, completion, total) in sorted(account.model_usage().items())]


def from_run(run: str, per_call: dict[str, float], per_1k_tokens: dict[str, float],
             prometheus_url: str | None = None, auth: PrometheusAuth | None = None,
             overrides: dict[str, dict[str, float]] | None = None) -> Report:
    """Usage from a run record: the server's counters where the record (or Prometheus, reached with `auth`) has
    them, checked against the ledger; the ledger alone, said so, where it has none. A Prometheus refusing the
    credentials is an error (SourceDenied), not a report from the ledger alone. Calls and tokens per model come from
    the ledger; calls the server counted beyond the ledger's are priced at the tier's price, as SERVER_DIFFERENCE.
    `overrides`: more prices by unit (per_1k_input_tokens, per_1k_output_tokens) -> tier -> amount."""
    record = RunRecord.load(run)
    plan = record.plan
    tiers = {i.user: i.tier for i in plan.identities}
    prices = price_list({t: v.price for t, v in plan.tiers.items()},
                        {"per_call": per_call, "per_1k_tokens": per_1k_tokens, **(overrides or {})})
    try:
        verification: Verification | None = gather(record.path, prometheus_url=prometheus_url, partial=True,
                                                   auth=auth)
    except SourceDenied:
        raise
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
            problems += _token_problems(check, account)
            note = "; ".join(problems)
            flags += [f"{account.user}: {problem}" for problem in problems]
        tier = tiers.get(account.user, account.tier)
        price = prices.get(tier, Price())
        models = model_usage(account, price)
        if authorized != account.authorized:
            difference = authorized - account.authorized
            models.append(ModelUsage(SERVER_DIFFERENCE, difference, 0, 0, 0, 0,
                                     round(price.cost(difference), COST_DIGITS)))
        users.append(Usage(
            account.user, check.group if check else tier, authorized, limited,
            round(sum(m.cost for m in models), COST_DIGITS), account.sent, account.rejected,
            account.prompt_tokens, account.completion_tokens, account.total_tokens, source, note,
            check.server_reports if check else None, models))
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


def _token_problems(check: UserCheck, account: ledger.Account) -> list[str]:
    """Where the server's token reports (report_calls) or token hits per model differ from the ledger's."""
    usage = account.model_usage()
    problems = []
    reports = sum(counts[1] for counts in usage.values())
    if check.server_reports is not None and check.server_reports != reports:
        problems.append(f"REPORTS: the server counted {check.server_reports} token report(s), the client saw "
                        f"{reports} answer(s) with usage")
    if check.server_model_tokens is None:
        return problems
    for model in sorted(set(check.server_model_tokens) | {m for m, counts in usage.items() if counts[4]}):
        tokens, seen = check.server_model_tokens.get(model, 0), usage.get(model, [0] * len(ledger.MODEL_COUNTS))[4]
        if tokens != seen:
            problems.append(f"TOKENS of model {model or '(none)'}: the server counted {tokens}, the client saw {seen}")
    return problems


def from_prometheus(url: str, since: float, plan: Plan, per_call: dict[str, float], per_1k_tokens: dict[str, float],
                    schema: str | None = None, job: str | None = None, now: float | None = None,
                    auth: PrometheusAuth | None = None, overrides: dict[str, dict[str, float]] | None = None
                    ) -> Report:
    """Usage over the last `since` seconds from raw counter samples (restarts handled, no extrapolation), from
    Prometheus reached with `auth`. Per model where a series carries the model label (calls where the authorized
    counter has it, else under model ""); the counters hold no input/output split, so only per-call and total-token
    prices apply."""
    end = now or time.time()
    start = end - since
    source = PrometheusSource(url, job=job, auth=auth)
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
    if found.reports and found.reports in names:
        kinds[found.reports] = REPORTS
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
    prices = price_list({t: v.price for t, v in plan.tiers.items()},
                        {"per_call": per_call, "per_1k_tokens": per_1k_tokens, **(overrides or {})})
    per_user: dict[str, list[float]] = {}
    per_model: dict[str, dict[str, list[float]]] = {}  # user -> model -> [calls, tokens]
    groups: dict[str, str] = {}
    events: dict[str, list[tuple[float, int, int]]] = {}  # user -> (seconds from the start, kind, calls)
    for labels, increase, points, kind in counters.values():
        user = labels[found.user_label]
        per_user.setdefault(user, [0.0, 0.0, 0.0, 0.0])[kind] += increase
        if kind in (AUTHORIZED, TOKENS):  # "" where this metric's series carry no model
            model = per_model.setdefault(user, {}).setdefault(labels.get(MODEL_LABEL, ""), [0.0, 0.0])
            model[kind == TOKENS] += increase
        if found.group_label in labels:  # a series without the label (some metrics lack it) says nothing
            groups[user] = labels[found.group_label]
        previous = 0.0
        for t, total in points if kind in (AUTHORIZED, LIMITED) else ():
            if total > previous:
                events.setdefault(user, []).append((t - start, kind, int(total - previous)))
            previous = total
    users = []
    for user, (a, l, tokens, reports) in sorted(per_user.items()):
        group = groups.get(user) or tiers.get(user, UNKNOWN_TIER)
        price = prices.get(tiers.get(user, group), Price())
        models = [ModelUsage(model, round(calls), None, None, None, round(hits),
                             round(price.for_model(model).cost(round(calls), round(hits)), COST_DIGITS))
                  for model, (calls, hits) in sorted(per_model.get(user, {}).items())]
        users.append(Usage(user, group, round(a), round(l), round(sum(m.cost for m in models), COST_DIGITS),
                           total_tokens=round(tokens) if found.token_hits else None,
                           reports=round(reports) if REPORTS in kinds.values() else None, models=models))
    curves = Curves.of({user: tuple(np.array(column) for column in zip(*changes)) for user, changes in events.items()})
    tokens = f", tokens from {found.token_hits}" if found.token_hits else ", no token counter (calls priced only)"
    if any(p.per_1k_input_tokens or p.per_1k_output_tokens for price in prices.values()
           for p in (price, *(m for _, m in price.models))):
        tokens += "; input/output token prices do not apply (the counters do not split tokens)"
    return Report(f"Chargeback, last {since / 3600:g} h", f"Prometheus at {url}: raw counter samples "
                  f"({found.name} schema{tokens}), restarts handled, no extrapolation", plan.currency, users, curves)
