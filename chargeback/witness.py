"""Authorino's server-side witness of the run's 401 and 403: how much its per-AuthConfig counter
`auth_server_authconfig_response_status{status="UNAUTHENTICATED"|"PERMISSION_DENIED"}` rose over the run, read
from the run's Prometheus between the last scrape of Authorino before the run's first request and its first scrape
after the run's last answer (raw samples, no extrapolation; copies of one scrape counted once, replicas added)."""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .counters import counter_identity, walk
from .ledger import NO_ANSWER, Account
from .prometheus import MetricsSourceError, PrometheusSource
from .summary import PlanSummary

AUTH_METRIC = "auth_server_authconfig_response_status"
REJECTIONS = ((401, "UNAUTHENTICATED"), (403, "PERMISSION_DENIED"))
LOOKBACK = 300.0  # seconds before the run's first request searched for Authorino's last scrape
SLACK = 5.0  # seconds beyond two scrape intervals to wait for Authorino's first scrape after the run


@dataclass(frozen=True)
class AuthWitness:
    """What Authorino counted for the run's AuthConfig between two of its scrapes."""

    authconfig: str  # namespace/name
    before: float  # the last scrape of Authorino's target(s) before the run's first request (epoch s)
    after: float  # their first scrape after the run's last answer
    counted: dict[str, int]  # status -> increase
    restarts: int  # counters that fell, or vanished while scraped, in between
    probe: bool  # the preflight's GET /v1/models without a key (a 401) may fall after `before`


def expected_rejections(client: dict[int, tuple[int, int]], witness: AuthWitness) -> dict[int, tuple[int, int]]:
    """The client's bounds on 401 and 403, the preflight's 401 added to the upper one when it may be in the span."""
    low, high = client[401]
    return {**client, 401: (low, high + witness.probe)}


def client_rejections(accounts: Iterable[Account], plan: PlanSummary) -> dict[int, tuple[int, int]]:
    """401 and 403 -> (answers the client got, those plus the unanswered requests of keys that would get it)."""
    bounds = {code: [0, 0] for code, _ in REJECTIONS}
    for account in accounts:
        statuses = account.statuses()
        identity = plan.identity(account.user)
        would_get = 401 if identity is None or not identity.known else 403 if not identity.allowed else None
        for code, _ in REJECTIONS:
            answered = int(np.count_nonzero(statuses == code))
            bounds[code][0] += answered
            bounds[code][1] += answered
        if would_get is not None:
            bounds[would_get][1] += int(np.count_nonzero(statuses == NO_ANSWER))
    return {code: (low, high) for code, (low, high) in bounds.items()}


def _authconfig(labels: dict[str, str]) -> str:
    """namespace/name of the AuthConfig (its namespace is `exported_namespace` when scraped through a
    ServiceMonitor, whose own `namespace` label wins)."""
    return f"{labels.get('exported_namespace') or labels.get('namespace', '')}/{labels.get('authconfig', '')}"


def read_witness(source: PrometheusSource, first_sent: float, last_answer: float,
                 preflight_by: float) -> AuthWitness | str:
    """Authorino's counts for the run, or why they cannot be read; waits (two of Authorino's scrape intervals at
    most) for its first scrape after the last answer. The run's preflight had its answer by `preflight_by`."""
    deadline: float | None = None
    while True:
        end = time.time()
        span = f"{int((end - first_sent + LOOKBACK) * 1000)}ms"
        try:
            series = source.matrix(f"{AUTH_METRIC}[{span}]", end)
            scrapes = source.scrapes(span, end)
        except MetricsSourceError as exc:
            return str(exc)
        if not series:
            return (f"the run's Prometheus at {source.url} holds no {AUTH_METRIC} series (Authorino's "
                    "/server-metrics is not scraped there)")
        configs = sorted({_authconfig(labels) for labels, _ in series})
        if len(configs) > 1:
            return (f"Authorino counts {len(configs)} AuthConfigs ({', '.join(configs)}); which one guards the "
                    "run's route is not known")
        targets = {(labels.get("job"), labels.get("instance")) for labels, _ in series}
        befores = {t: max((s for s in scrapes.get(t, []) if s <= first_sent), default=None) for t in targets}
        afters = {t: min((s for s in scrapes.get(t, []) if s > last_answer), default=None) for t in targets}
        missing = sorted(f"{job}/{instance}" for (job, instance), s in befores.items() if s is None)
        if missing:
            return f"Authorino's target {', '.join(missing)} was not scraped in the {LOOKBACK:g} s before the run"
        if all(s is not None for s in afters.values()):
            break
        if deadline is None:
            intervals = [float(np.median(np.diff(s))) for t in targets if len(s := scrapes.get(t, [])) > 1]
            deadline = time.monotonic() + 2 * max(intervals, default=15.0) + SLACK
        if time.monotonic() > deadline:
            late = sorted(f"{job}/{instance}" for (job, instance), s in afters.items() if s is None)
            return f"Authorino's target {', '.join(late)} was not scraped after the run's last answer"
        time.sleep(0.2)
    counted = {status: 0.0 for _, status in REJECTIONS}
    restarts, read = 0, set()
    for labels, samples in series:
        key = counter_identity(labels)
        status = labels.get("status")
        if key in read or status not in counted:
            continue  # a copy of a series already read (another job scraping the same target)
        read.add(key)
        target = (labels.get("job"), labels.get("instance"))
        before, after = befores[target], afters[target]
        baseline = next((v for t, v in samples if t == before), None)
        within = [(t, v) for t, v in samples if before < t <= after]  # type: ignore[operator]
        increase, fell, _ = walk(within, baseline, sorted(s for s in scrapes[target] if s > before))  # type: ignore
        counted[status] += increase
        restarts += fell
    before = min(befores.values())  # type: ignore[type-var]
    return AuthWitness(configs[0], before, max(afters.values()),  # type: ignore[type-var]
                       {status: round(n) for status, n in counted.items()}, restarts, before < preflight_by)

