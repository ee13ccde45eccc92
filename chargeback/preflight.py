"""Before any traffic: the gateway answers, the metrics source answers and serves the gateway's counters, and
Limitador's admin API answers and holds the limits the policies compile to. Each failure is one line naming the URL,
and the run sends nothing."""
from __future__ import annotations

from dataclasses import dataclass

import requests

from .counters import namespaces_of
from .endpoint import MetricsEndpoint
from .limitador import LimitadorAdmin, LimitadorError
from .limits import expected_limits, limits_diff
from .plan import DEFAULT_NAMESPACE, Plan
from .prometheus import MetricsSourceError, PrometheusAuth, PrometheusSource
from .verify import MetricsSource, open_source


class PreflightError(RuntimeError):
    """What stops a run before its first request; one line."""


@dataclass
class Sources:
    """What a run reads besides the gateway: the metrics source, Limitador's admin API, the limitador_namespace."""

    metrics: MetricsSource | None
    limitador: LimitadorAdmin | None
    namespace: str | None


def gateway_answers(url: str, timeout: float = 5.0) -> None:
    """Any HTTP answer will do (401 without a key is expected); no answer is an error."""
    if not url:
        raise PreflightError("no gateway URL: give it with -H/--host (or in the web UI's Host field)")
    try:
        requests.get(f"{url.rstrip('/')}/v1/models", timeout=timeout)
    except requests.RequestException as exc:
        raise PreflightError(f"the gateway at {url} does not answer: {type(exc).__name__}") from None


def preflight(plan: Plan, gateway_url: str, prometheus_url: str | None = None, metrics_url: str | None = None,
              job: str | None = None, limitador_url: str | None = None, namespace: str | None = None,
              auth: PrometheusAuth | None = None) -> Sources:
    """Check every URL of a run before it starts (Prometheus reached with `auth`); what the run reads from them."""
    gateway_answers(gateway_url)
    metrics = open_source(prometheus_url, metrics_url, job, auth=auth)
    try:
        if isinstance(metrics, PrometheusSource):
            metrics.targets()
        elif isinstance(metrics, MetricsEndpoint):
            metrics.preflight()
        if limitador_url and not namespace:
            namespace = plan.limitador_namespace or _discovered(metrics, plan) or DEFAULT_NAMESPACE
    except MetricsSourceError as exc:
        raise PreflightError(str(exc)) from None
    admin = LimitadorAdmin(limitador_url, namespace) if limitador_url and namespace else None
    if admin is not None:
        try:
            admin.status()
            admin.counters()
            limits_match(plan, admin)
        except LimitadorError as exc:
            raise PreflightError(str(exc)) from None
    return Sources(metrics, admin, namespace)


def limits_match(plan: Plan, admin: LimitadorAdmin) -> None:
    """Limitador holds the limits the Plan's policies compile to, in every namespace they give (`GET /limits/{ns}`);
    else a LimitadorError naming the first limit missing or different."""
    for namespace, expected in expected_limits(plan, admin.namespace).items():
        problems = limits_diff(expected, admin.limits(namespace), namespace)
        if problems:
            raise LimitadorError(f"Limitador at {admin.url}: {problems[0]}")


def _discovered(metrics: MetricsSource | None, plan: Plan) -> str | None:
    """The one limitador_namespace whose series carry the Plan's users, if the source shows exactly one."""
    if metrics is None:
        return None
    found = namespaces_of(metrics.snapshot(), {i.user for i in plan.identities})
    if len(found) > 1:
        raise PreflightError(f"{metrics.url}: the Plan's users have series in several limitador_namespace values "
                             f"({', '.join(sorted(found))}); --namespace names the gateway's route")
    return next(iter(found), None)
