"""Verification data: per user, what the client saw, what the server's counters rose by, what the window model
says. Built from a run record and a metrics source; the checks in `checks/` assert on it."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from .counters import (
    Snapshot,
    counter_identity,
    deduplicated,
    groups_seen,
    in_namespace,
    increases,
    namespaces_of,
    per_user,
    walk,
)
from .endpoint import MetricsEndpoint
from .expectations import (
    Explanation,
    Overshoot,
    Prediction,
    Prior,
    explain_overshoot,
    in_flight_at_once,
    most_authorized,
    predict,
)
from .ledger import LIMITER_TIMEOUT, NOT_REACHED, Account, Timeline
from .plan import Rate
from .prior import from_counters, from_history, windows_listed
from .prometheus import MetricsSourceError, PrometheusAuth, PrometheusDenied, PrometheusSource, Target
from .reconcile import Counted, counted, foreign_range
from .record import COMPLETE, RunRecord
from .schema import DEFAULT_SCHEMA, MODEL_LABEL, MetricSchema, candidate_metrics, detect_schema, schema_named
from .summary import PlanSummary
from .token_model import ALLOW, REPORT_SLACK, combined, explain_with_tokens, token_checks, with_token_calls
from .witness import AuthWitness, read_witness


class VerifyError(ValueError):
    """The run cannot be verified (record incomplete, no metrics, ...); one line."""


class SourceDenied(VerifyError):
    """Prometheus refused the credentials, or its TLS certificate is not trusted; one line."""


class MetricsSource(Protocol):
    url: str

    def scrape_after(self, after: float, timeout: float | None = None) -> float: ...
    def snapshot(self, at: float | None = None) -> Snapshot: ...
    def resets(self, start: float, end: float) -> dict[str, int]: ...


def open_source(prometheus_url: str | None, metrics_url: str | None, job: str | None = None,
                targets: list[dict[str, Any]] | None = None, auth: PrometheusAuth | None = None
                ) -> MetricsSource | None:
    """The metrics source of a run: Prometheus (its gateway targets as the run found them, if given; reached with
    `auth`), else the gateway's /metrics, else none."""
    if prometheus_url:
        source = PrometheusSource(prometheus_url, job=job, auth=auth)
        if targets:
            source.use_targets([Target(**t) for t in targets])
        return source
    return MetricsEndpoint(metrics_url) if metrics_url else None


def fresh_snapshot(source: MetricsSource, after: float) -> Snapshot:
    """The counters at the first scrape of the gateway's targets later than `after` (epoch s): every call
    answered by `after` is in it."""
    at = source.scrape_after(after)
    snapshot = source.snapshot(at)
    snapshot.covers = (after, snapshot.at)
    return snapshot


@dataclass
class UserCheck:
    """One user's numbers: client side, server side (the increase between the snapshots), the window model."""

    user: str
    tier: str | None  # the Plan's tier; None: not an identity of the Plan
    client: Account
    counted: Counted  # what the server's counters must have risen by, from the ledger
    server_authorized: int
    server_limited: int
    server_tokens: int | None  # token hits, for users under a token limit in a schema that counts them
    resets: int
    server_reports: int | None = None  # token reports (report_calls), for those users where the gateway serves them
    server_model_tokens: dict[str, int] | None = None  # token hits per model, where the token metric labels it
    billed: set[str | None] = field(default_factory=set)  # group labels of the user's series (None: one lacks it)
    allowed_groups: set[str] = field(default_factory=set)  # the group labels the Plan allows for the user
    rates: list[Rate] = field(default_factory=list)
    token_rates: list[Rate] = field(default_factory=list)
    token_calls: int = 0  # beside request limits: the token checks the server may have counted authorized
    prior: Prior | None = None
    prediction: Prediction | None = None
    explanation: Explanation | None = None
    bounds: dict[str, tuple[int, int]] = field(default_factory=dict)  # rate label -> (most authorized, windows)
    foreign: tuple[float, float] | None = None  # when calls the run did not send were counted, if known
    open_ended: str = ""  # why the ledger may lack requests of this user ("" when it holds them all)
    in_flight: int = 0  # the most of its requests that reached the limiter in flight at once
    overshoots: tuple[Overshoot, ...] = ()  # groups in flight together that got more through than a limit had room

    @property
    def group(self) -> str:
        """The group the server bills the user under (the Plan's tier where its series carry none)."""
        labels = sorted(g for g in self.billed if g is not None)
        return ",".join(labels) if len(labels) == 1 else (" + ".join(labels) if labels else self.tier or "(none)")


class GroupCount(NamedTuple):
    """One billed group: what the client saw (bounds) and what the server's counters rose by."""

    group: str
    counted: Counted
    authorized: int
    limited: int


@dataclass
class Verification:
    record: RunRecord
    schema: MetricSchema
    users: dict[str, UserCheck]
    group_fallback: list[str]  # users whose series carry no group label: grouped by the Plan's tier
    before: Snapshot
    after: Snapshot
    namespace: str | None
    groups: dict[str, GroupCount]  # billed group -> its counts
    partial: bool = False
    strict: bool = False  # --strict-limits: any overshoot of a limit fails, whatever was in flight
    auth: AuthWitness | None = None  # what Authorino counted for the run, when its Prometheus has it
    auth_why: str = "the run has no Prometheus (Authorino's counters are read there)"  # why `auth` is None
    labels: dict[str, set[str]] = field(default_factory=dict)  # metric -> the label names its series carry

    @property
    def priors(self) -> dict[str, list[str]]:
        """Where each user's state before the run came from -> the users."""
        found: dict[str, list[str]] = {}
        for check in self.users.values():
            if check.prior is not None and check.rates:
                found.setdefault(check.prior.source, []).append(check.user)
        return found


def schema_of(before: Snapshot, after: Snapshot, forced: str | None, reached_limiter: int) -> MetricSchema:
    """The schema named, else the one the snapshots' series fit; the default when nothing reached the limiter."""
    if forced:
        return schema_named(forced)
    schema = detect_schema(labels_per_metric(before, after))
    if schema is None and not reached_limiter:
        return schema_named(DEFAULT_SCHEMA)  # nothing reached the limiter: every schema reads zero
    if schema is None:
        raise VerifyError(f"{after.source}: no chargeback metrics with a user label (looked for "
                          f"{', '.join(candidate_metrics())}); is the gateway scraped, and did any request reach "
                          "the limiter? --schema names the metrics when detection cannot")
    return schema


def labels_per_metric(*snapshots: Snapshot) -> dict[str, set[str]]:
    """Metric name -> every label name its series carry in the snapshots: each metric's own, since a label may be
    on one metric only (a TelemetryPolicy label read from the response body is on the token metric alone)."""
    labels: dict[str, set[str]] = {}
    for snapshot in snapshots:
        for name, series in snapshot.series.items():
            for series_labels, _ in series:
                labels.setdefault(name, set()).update(series_labels)
    return labels


def _namespace(snapshot: Snapshot, schema: MetricSchema, users: set[str], given: str | None) -> str | None:
    """The limitador_namespace to read: given, else the one whose series carry the Plan's users; a one-line error
    when several do."""
    if given:
        return given
    found = namespaces_of(snapshot, users, schema.user_label, schema.namespace_label)
    if len(found) > 1:
        raise VerifyError(f"{snapshot.source}: the Plan's users have series in several limitador_namespace values "
                          f"({', '.join(sorted(found))}); --namespace names the gateway's route "
                          "(<namespace>/<HTTPRoute>)")
    return next(iter(found), None)


def verify(record: RunRecord, before: Snapshot, after: Snapshot, resets: dict[str, int],
           schema_name: str | None = None, namespace: str | None = None, priors: dict[str, Prior] | None = None,
           limiter_timeout: float = LIMITER_TIMEOUT, partial: bool = False,
           quiet_tokens: set[str] | None = None) -> Verification:
    """Put the client's ledger, the server's increases and the window model side by side, per user. Users without
    a prior start from an unknown state (windows may be open). A request without an answer had reached the limiter
    when it was in flight longer than `limiter_timeout` plus the slowest answer the gateway gave before the model
    (401, 403, 429) in this run: a saturated gateway can hold a request that long before its limiter sees it."""
    plan = record.plan
    identities = {i.user: i for i in plan.identities}
    reached = sum(a.authorized + a.limited for a in record.ledger.accounts.values())
    schema = schema_of(before, after, schema_name, reached)
    namespace = _namespace(after, schema, set(identities), namespace)
    names = {"authorized": schema.authorized, "limited": schema.limited}
    if schema.token_hits:
        names["tokens"] = schema.token_hits
    if schema.reports and schema.reports in after.series:  # read when the gateway serves it
        names["reports"] = schema.reports
    series = {kind: (in_namespace(before.series.get(name, []), namespace),
                     in_namespace(after.series.get(name, []), namespace)) for kind, name in names.items()}
    changes = {kind: increases(old, new) for kind, (old, new) in series.items()}
    totals = {kind: per_user(c, schema.user_label) for kind, c in changes.items()}
    went_back = {labels.get(schema.user_label) for c in changes.values() for labels, change in c.values() if change < 0}
    labelled = {kind for kind in ("authorized", "limited")
                if any(schema.group_label in labels for labels, _ in series[kind][1])}
    billed = groups_seen([(l, v) for kind in labelled for l, v in series[kind][1]], schema.user_label,
                         schema.group_label)
    shared = plan.shared_counters()
    unaccounted = set((record.meta.get("unaccounted") or {}).get("users", []))
    why_open = (record.meta.get("unaccounted") or {}).get("why", "")
    users = set(record.ledger.accounts) | {u for t in totals.values() for u, v in t.items() if v}
    decided_after = limiter_timeout + record.ledger.slowest_gateway_answer()  # a request unanswered for longer
    #                                                                           had reached the limiter
    labels = labels_per_metric(before, after)
    model_tokens = None  # user -> model -> token hits, where the token metric carries the model label
    if "tokens" in changes and MODEL_LABEL in labels.get(schema.token_hits or "", set()):
        model_tokens = {}
        for series_labels, change in changes["tokens"].values():
            user_models = model_tokens.setdefault(series_labels.get(schema.user_label, ""), {})
            model = series_labels.get(MODEL_LABEL, "")
            user_models[model] = user_models.get(model, 0) + round(change)
    checks: dict[str, UserCheck] = {}
    for user in sorted(users):
        identity = identities.get(user)
        client = record.ledger.accounts.get(user) or Account(user, identity.tier if identity else "(unknown)")
        timeline = client.timeline(decided_after)
        rates, token_limited = plan.rates_of(user)
        token_rates = plan.token_rates_of(user)
        tokens = _token_classes(timeline, token_rates, user in (quiet_tokens or set()), record.meta["started"])
        check = UserCheck(
            user=user, tier=identity.tier if identity else None, client=client,
            counted=counted(timeline, after.window, decided_after, open_ended=user in unaccounted,
                            token_check=tokens != ALLOW if rates and token_rates else None),
            server_authorized=round(totals["authorized"].get(user, 0)),
            server_limited=round(totals["limited"].get(user, 0)),
            server_tokens=round(totals["tokens"].get(user, 0)) if token_limited and "tokens" in totals else None,
            server_reports=round(totals["reports"].get(user, 0)) if token_limited and "reports" in totals else None,
            server_model_tokens=model_tokens.get(user, {}) if token_limited and model_tokens is not None else None,
            resets=resets.get(user, 0) + (user in went_back), billed=billed.get(user, set()),
            allowed_groups=identity.allowed_groups if identity else set(), rates=rates, token_rates=token_rates,
            open_ended=why_open if user in unaccounted else "")
        if rates and token_rates:
            check.token_calls = client.authorized + client.unanswered
        if identity is not None:
            reaching = timeline.outcome != NOT_REACHED
            _model(check, timeline.where(reaching), (priors or {}).get(user) or Prior.unknown(
                rates, record.meta["started"], "no state of the counters before the run was read"),
                tokens[reaching], shared.get(user))
        checks[user] = check
    fallback = sorted(u for u, c in checks.items() if not c.billed and c.tier is not None
                      and (c.server_authorized or c.server_limited))
    groups = _group_sums(checks, changes, schema)
    return Verification(record, schema, checks, fallback, before, after, namespace, groups, partial, labels=labels)


def _token_classes(timeline: Timeline, rates: list[Rate], quiet_before: bool, started: float) -> np.ndarray:
    """The token model's answer per request (ALLOW for all when no token limit applies); windows of earlier
    traffic may be open for one window after the run started unless `quiet_before` (no report in the window
    before the run)."""
    return combined([token_checks(timeline, rate, float("-inf") if quiet_before else
                                  started + rate.window + REPORT_SLACK) for rate in rates], len(timeline))


def _model(check: UserCheck, requests: Timeline, prior: Prior, tokens: np.ndarray, shares_with: str | None) -> None:
    """The window model's answers for one identity of the Plan (with the token model's answers `tokens` where a
    token limit applies); none where it cannot follow the identity alone."""
    check.prior = prior
    if shares_with:
        check.explanation = Explanation(None, why=f"a counter is shared with {shares_with}, and the model follows "
                                                   "one identity at a time")
        return
    check.bounds = {r.label: most_authorized(requests, r, i, prior) for i, r in enumerate(check.rates)}
    check.in_flight = in_flight_at_once(requests)
    prediction = predict(requests, check.rates, prior)
    check.prediction = (with_token_calls(prediction, requests, tokens, bool(check.rates)) if check.token_rates
                        else prediction)
    if check.open_ended:
        check.explanation = Explanation(None, why=check.open_ended)
    elif check.token_rates:
        check.explanation, check.overshoots = explain_with_tokens(requests, check.rates, prior, tokens,
                                                                  check.token_rates)
    else:
        check.explanation, check.overshoots = explain_overshoot(requests, check.rates, prior)


def _group_sums(checks: dict[str, UserCheck], changes: dict[str, dict],
                schema: MetricSchema) -> dict[str, GroupCount]:
    """Per group: the client's bounds under the tier the Plan bills each user in, and the server's increases under
    the group its series carry (under the user's tier when the label is one the Plan allows for the user, or
    missing; under the label as it is otherwise)."""
    sums: dict[str, list] = {}

    def row(group: str) -> list:
        return sums.setdefault(group, [Counted((0, 0), (0, 0), (0, 0)), 0, 0])

    for check in checks.values():
        row(check.tier or "(none)")[0] += check.counted
    for position, kind in ((1, "authorized"), (2, "limited")):
        for labels, change in changes[kind].values():
            if not round(change):
                continue
            check = checks.get(labels.get(schema.user_label, ""))
            label = labels.get(schema.group_label)
            tier = check.tier if check is not None and check.tier else "(none)"
            allowed = check.allowed_groups if check is not None else set()
            row(tier if label is None or label in allowed else label)[position] += round(change)
    return {group: GroupCount(group, *values) for group, values in sorted(sums.items())}


def _after(record: RunRecord, source: MetricsSource, partial: bool) -> Snapshot:
    """The counters one scrape after the run's last answer (never now); for a partial run whose gateway stopped
    being scraped, the last scrape of it there was."""
    end = record.ledger.last_answer() or record.meta["started"]
    try:
        return fresh_snapshot(source, end)
    except MetricsSourceError:
        if not partial or not isinstance(source, PrometheusSource):
            raise
    moment = source.last_scrape_before(record.meta.get("ended") or end + source.barrier_timeout(),
                                       since=record.meta["started"])
    if moment is None:
        raise VerifyError(f"Prometheus at {source.url}: no successful scrape of the gateway since the run started")
    snapshot = source.snapshot(moment)
    targets = source.targets()
    snapshot.covers = (moment - max(t.interval for t in targets), moment + max(t.timeout for t in targets))
    return snapshot


def history_priors(plan: PlanSummary, users: Iterable[str], source: PrometheusSource, schema: MetricSchema,
                   namespace: str | None, at: float) -> dict[str, Prior]:
    """Each user's state at `at` from its counters' history in Prometheus (MetricsSourceError if unreadable)."""
    return from_history(source, schema.authorized, namespace, {u: plan.rates_of(u)[0] for u in users}, at)


def _priors(record: RunRecord, source: MetricsSource | None, schema: MetricSchema,
            namespace: str | None) -> dict[str, Prior]:
    """Each user's state before the run: from Limitador's /counters read by the run, else from the counters'
    history in Prometheus as the run read it when it started (kept in the record), else as Prometheus still holds
    it; users left out start unknown."""
    plan = record.plan
    users = [i.user for i in plan.identities if i.user in record.ledger.accounts]
    reading = (record.meta.get("limitador") or {}).get("before")
    if reading is not None:
        return {user: from_counters(reading, plan.rates_of(user)[0], plan.counter_sources,
                                    plan.identity(user).counter_values)
                for user in users}
    kept = record.meta.get("prior")
    if kept is not None:
        return {user: Prior.from_dict(kept[user]) for user in users if user in kept}
    if isinstance(source, PrometheusSource):
        try:
            return history_priors(plan, users, source, schema, namespace, record.meta["started"])
        except PrometheusDenied:  # the credentials, not the history: say so
            raise
        except MetricsSourceError:
            return {}
    return {}


def _quiet_tokens(record: RunRecord, source: MetricsSource | None, before: Snapshot, schema: MetricSchema,
                  namespace: str | None) -> set[str]:
    """The users under a token limit with no token window open when the run started: none of their token counters
    listed by Limitador's /counters before the run, else no token report in Prometheus for a whole window before."""
    plan = record.plan
    users = {u: rates for u in record.ledger.accounts if (rates := plan.token_rates_of(u))}
    reading = (record.meta.get("limitador") or {}).get("before")
    if reading is not None:
        return {u for u, rates in users.items()
                if not windows_listed(reading, rates, plan.counter_sources, plan.identity(u).counter_values)}
    if not users or not schema.token_hits or not isinstance(source, PrometheusSource):
        return set()
    longest = max(r.window for rates in users.values() for r in rates)
    try:
        earlier = source.snapshot(at=before.window[0] - longest - REPORT_SLACK)
    except MetricsSourceError:
        return set()
    then, now = (per_user(dict(deduplicated(in_namespace(s.series.get(schema.token_hits, []), namespace))),
                          schema.user_label) for s in (earlier, before))
    return {u for u in users if then.get(u, 0) == now.get(u, 0)}


def _restarts(record: RunRecord, resets: dict[str, int]) -> dict[str, int]:
    """Add a reset for every user when Limitador's /status says it restarted during the run (a restart and
    regrowth within one scrape interval is invisible in the counters)."""
    status = record.meta.get("limitador") or {}
    before, after = (status.get(k) or {} for k in ("status_before", "status_after"))
    if not before.get("started_at") or not after.get("started_at") or before["started_at"] == after["started_at"]:
        return resets
    return {user: resets.get(user, 0) + 1 for user in set(resets) | set(record.ledger.accounts)}


def _foreign(v: Verification, source: PrometheusSource) -> None:
    """For users whose server counted more than the run sent: when, from the raw samples between the snapshots."""
    over = {u for u, c in v.users.items() if c.server_authorized + c.server_limited > c.counted.total[1]}
    if not over:
        return
    history = source.history(v.before.at, v.after.at, (v.schema.authorized, v.schema.limited))
    buckets: dict[str, dict[tuple, int]] = {}
    read: set[tuple] = set()
    for name, labels, samples, scrapes in history:
        user = labels.get(v.schema.user_label)
        if user not in over or not in_namespace([(labels, 0.0)], v.namespace):
            continue
        key = (name, counter_identity(labels))
        if key in read:  # another scrape job reading the same counter
            continue
        read.add(key)
        baseline = deduplicated(in_namespace(v.before.series.get(name, []), v.namespace)).get(counter_identity(labels))
        previous_t = v.before.at
        _, _, points = walk(samples, baseline[1] if baseline else None, scrapes)
        previous_total = 0.0
        for t, total in points:
            if total > previous_total:
                cell = buckets.setdefault(user, {})
                cell[(previous_t, t)] = cell.get((previous_t, t), 0) + round(total - previous_total)
            previous_t, previous_total = t, total
    for user, cells in buckets.items():
        check = v.users[user]
        check.foreign = foreign_range(sorted((lo, hi, n) for (lo, hi), n in cells.items()),
                                      check.client.timeline()) or (v.before.at, v.after.at)


def _witness(v: Verification, source: PrometheusSource) -> None:
    """Authorino's counts between its last scrape before the run's first request and its first after the last
    answer, or why there are none."""
    ledger = v.record.ledger
    first = min((a.first for a in ledger.accounts.values() if a.first is not None), default=None)
    last = ledger.last_answer()
    if first is None or last is None:
        v.auth_why = "the run sent no request"
        return
    found = read_witness(source, first, last, v.before.window[0])
    if isinstance(found, str):
        v.auth_why = found
    else:
        v.auth = found


def gather(run: str | Path, prometheus_url: str | None = None, metrics_url: str | None = None,
           schema: str | None = None, job: str | None = None, namespace: str | None = None, partial: bool = False,
           limiter_timeout: float = LIMITER_TIMEOUT, auth: PrometheusAuth | None = None,
           strict_limits: bool = False) -> Verification:
    """Load a run record and its snapshots; read what is missing from the given source (Prometheus reached with
    `auth`, never credentials from the record), at the run's own times (so a later check reads the same numbers).
    An unfinished run only with `partial`. Any overshoot of a limit fails with `strict_limits`, or when the run
    asked for it."""
    record = RunRecord.load(run)
    if record.state != COMPLETE and not partial:
        raise VerifyError(f"{record.path}: the run is {record.state} ({record.meta.get('reason')}); an unfinished "
                          "run can be reconciled for what it holds with --partial")
    meta = record.meta
    prometheus_url = prometheus_url or (None if metrics_url else meta.get("prometheus_url"))
    same = prometheus_url == meta.get("prometheus_url") and (job or meta.get("job")) == meta.get("job")
    source = open_source(prometheus_url, metrics_url or meta.get("metrics_url"), job or meta.get("job"),
                         meta.get("targets") if same else None, auth)
    snapshots = {k: s for k, s in record.snapshots.items() if source is None or s.source == source.url}
    if source is None and not ("before" in snapshots and "after" in snapshots):
        raise VerifyError(f"{record.path}: the record holds no metrics snapshots; pass --prometheus-url "
                          "(or --metrics-url) to read the server's counters")
    try:
        before = snapshots.get("before") or source.snapshot(at=meta["started"])  # type: ignore[union-attr]
        after = snapshots.get("after") or _after(record, source, partial)  # type: ignore[arg-type]
        resets = after.resets if "after" in snapshots else source.resets(before.at, after.at)  # type: ignore
        resets = _restarts(record, resets)
        reached = sum(a.authorized + a.limited for a in record.ledger.accounts.values())
        found = schema_of(before, after, schema, reached)
        priors = _priors(record, source, found, namespace or meta.get("namespace"))
        quiet = _quiet_tokens(record, source, before, found, namespace or meta.get("namespace"))
        v = verify(record, before, after, resets, found.name, namespace or meta.get("namespace"), priors,
                   limiter_timeout, partial or record.state != COMPLETE, quiet)
        v.strict = strict_limits or bool(meta.get("strict_limits"))
        if isinstance(source, PrometheusSource):
            _foreign(v, source)
            _witness(v, source)
    except PrometheusDenied as exc:
        raise SourceDenied(str(exc)) from None
    except MetricsSourceError as exc:
        raise VerifyError(str(exc)) from None
    return v


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows (dicts with the same keys) as an aligned text table."""
    if not rows:
        return "(no rows)"
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)
