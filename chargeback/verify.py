"""Verification data: per user, what the client saw, what the server's counters rose by, and what the window
model expects. Built from a run record and a metrics source; the checks in `checks/` assert on it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .counters import Snapshot, groups_seen, increases, per_user
from .endpoint import MetricsEndpoint
from .expectations import Expectation, Rate, expect, under_token_limits
from .ledger import Account
from .prometheus import PrometheusSource
from .record import COMPLETE, RunRecord
from .schema import CANDIDATE_METRICS, SCHEMAS, MetricSchema, detect_schema, schema_named

SCRAPE_WAIT = 60.0  # seconds to wait for a scrape later than the last answer (a cluster may scrape every 30 s)


class VerifyError(ValueError):
    """The run cannot be verified (record incomplete, no metrics, ...); one line."""


class MetricsSource(Protocol):
    url: str

    def wait_for_scrape(self, after: float, timeout: float = ...) -> float: ...
    def snapshot(self, at: float | None = None) -> Snapshot: ...
    def resets(self, start: float, end: float) -> dict[str, int]: ...


def open_source(prometheus_url: str | None, metrics_url: str | None, job: str | None = None) -> MetricsSource | None:
    if prometheus_url:
        return PrometheusSource(prometheus_url, job=job)
    return MetricsEndpoint(metrics_url) if metrics_url else None


def fresh_snapshot(source: MetricsSource, after: float) -> Snapshot:
    """A snapshot from a scrape later than `after` (epoch s)."""
    source.wait_for_scrape(after=after, timeout=SCRAPE_WAIT)
    return source.snapshot()


@dataclass
class UserCheck:
    """One user's numbers: client side, server side (increase between the snapshots), model."""

    user: str
    group: str
    tier: str | None  # None: not an identity of the Plan
    client: Account
    server_authorized: int
    server_limited: int
    server_tokens: int | None  # token hits, for users under a token limit in a schema that counts them
    resets: int
    expectation: Expectation | None
    rates: list[Rate] = field(default_factory=list)


@dataclass
class Verification:
    record: RunRecord
    schema: MetricSchema
    users: dict[str, UserCheck]
    group_fallback: list[str]  # users whose series carry no group label: grouped by the Plan's tier
    before: Snapshot
    after: Snapshot

    @property
    def expected(self) -> dict[str, tuple[int, int]]:
        return {u: (a, l) for u, (a, l) in self.record.meta.get("expected", {}).items()}

    def groups(self) -> dict[str, dict[str, int]]:
        """group -> client and server authorized/limited sums."""
        sums: dict[str, dict[str, int]] = {}
        for check in self.users.values():
            row = sums.setdefault(check.group, {"client_authorized": 0, "client_limited": 0, "unanswered": 0,
                                                "server_authorized": 0, "server_limited": 0})
            row["unanswered"] += check.client.unanswered
            row["client_authorized"] += check.client.authorized
            row["client_limited"] += check.client.limited
            row["server_authorized"] += check.server_authorized
            row["server_limited"] += check.server_limited
        return sums


def _schema(before: Snapshot, after: Snapshot, forced: str | None, reached_limiter: int) -> MetricSchema:
    if forced:
        return schema_named(forced)
    labels: dict[str, set[str]] = {}
    for snapshot in (before, after):
        for name, series in snapshot.series.items():
            for series_labels, _ in series:
                labels.setdefault(name, set()).update(series_labels)
    schema = detect_schema(labels)
    if schema is None and not reached_limiter:
        return SCHEMAS["seed"]  # nothing reached the limiter: every schema reads zero
    if schema is None:
        raise VerifyError(f"{after.source}: no chargeback metrics with a user label (looked for "
                          f"{', '.join(CANDIDATE_METRICS)}); is the gateway scraped, and did any request reach "
                          "the limiter? --schema names the metrics when detection cannot")
    return schema


def _expectation(client: Account, rates: list[Rate], token_limited: bool) -> Expectation:
    expectation = expect(client.timeline, rates)
    return under_token_limits(expectation) if token_limited else expectation


def verify(record: RunRecord, before: Snapshot, after: Snapshot, resets: dict[str, int],
           schema_name: str | None = None) -> Verification:
    """Put the client's ledger, the server's increases and the window model side by side, per user."""
    reached = sum(a.authorized + a.limited for a in record.ledger.accounts.values())
    schema = _schema(before, after, schema_name, reached)
    names = {"authorized": schema.authorized, "limited": schema.limited}
    if schema.token_hits:
        names["tokens"] = schema.token_hits
    changes = {kind: increases(before.series.get(name, []), after.series.get(name, [])) for kind, name in names.items()}
    totals = {kind: per_user(c, schema.user_label) for kind, c in changes.items()}
    went_back = {labels.get(schema.user_label) for c in changes.values() for labels, change in c.values() if change < 0}
    labelled = groups_seen(after.series.get(schema.authorized, []) + after.series.get(schema.limited, []),
                           schema.user_label, schema.group_label)
    identities = {i["user"]: i for i in record.meta["plan"]["identities"]}
    limits = {l["name"]: l for l in record.meta["plan"]["limits"]}
    users = set(record.ledger.accounts) | {u for t in totals.values() for u, v in t.items() if v}
    checks: dict[str, UserCheck] = {}
    for user in sorted(users):
        identity = identities.get(user)
        client = record.ledger.accounts.get(user) or Account(user, identity["tier"] if identity else "(unknown)")
        applying = [limits[name] for name in (identity or {}).get("limits", [])]
        rates = [Rate(l["name"], r["limit"], r["window_seconds"]) for l in applying if l["kind"] == "requests"
                 for r in l["rates"]]
        token_limited = "tokens" in totals and any(l["kind"] == "tokens" for l in applying)
        checks[user] = UserCheck(
            user=user,
            group=labelled.get(user) or (identity["tier"] if identity else client.tier),
            tier=identity["tier"] if identity else None,
            client=client,
            server_authorized=round(totals["authorized"].get(user, 0)),
            server_limited=round(totals["limited"].get(user, 0)),
            server_tokens=round(totals["tokens"].get(user, 0)) if token_limited else None,
            resets=resets.get(user, 0) + (user in went_back),
            expectation=_expectation(client, rates, any(l["kind"] == "tokens" for l in applying)) if identity else None,
            rates=rates,
        )
    fallback = sorted(u for u, c in checks.items() if u not in labelled and c.tier is not None)
    return Verification(record, schema, checks, fallback, before, after)


def gather(run: str | Path, prometheus_url: str | None = None, metrics_url: str | None = None,
           schema: str | None = None, job: str | None = None) -> Verification:
    """Load a complete run record and its snapshots; read what is missing from the given source."""
    record = RunRecord.load(run)
    if record.state != COMPLETE:
        raise VerifyError(f"{record.path}: the run is {record.state} ({record.meta.get('reason')}); "
                          "an unfinished run cannot be verified")
    source = open_source(prometheus_url or (None if metrics_url else record.meta.get("prometheus_url")),
                         metrics_url or record.meta.get("metrics_url"), job)
    snapshots = {k: s for k, s in record.snapshots.items() if source is None or s.source == source.url}
    if "before" in snapshots and "after" in snapshots:
        return verify(record, snapshots["before"], snapshots["after"], snapshots["after"].resets, schema)
    if source is None:
        raise VerifyError(f"{record.path}: the record holds no metrics snapshots; pass --prometheus-url "
                          "(or --metrics-url) to read the server's counters")
    before = snapshots.get("before") or source.snapshot(at=record.meta["started"])
    after = fresh_snapshot(source, after=record.ledger.last_answer() or record.meta["started"])
    return verify(record, before, after, source.resets(before.at, after.at), schema)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as an aligned text table."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
