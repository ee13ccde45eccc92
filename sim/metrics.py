"""Limitador-style /metrics for the stand-in: counts kept in plain dicts, rendered by prometheus_client."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

from chargeback.schema import MetricSchema

LabelValues = tuple[str, ...]


class LimitadorMetrics:
    """Per-user authorized/limited/token counters under one schema, plus Limitador's namespace-level ones.

    Counting is a dict increment on the gateway's hot path; families are built only when scraped.
    """

    def __init__(self, schema: MetricSchema, namespace: str, label_names: tuple[str, ...],
                 report_labels: tuple[str, ...] = ()):
        self.schema = schema
        self.namespace = namespace
        self.label_names = (schema.namespace_label,) + label_names
        self.report_label_names = self.label_names + report_labels  # token metrics: plus response-body labels
        self.authorized: Counter[LabelValues] = Counter()
        self.limited: Counter[LabelValues] = Counter()
        self.token_hits: Counter[LabelValues] = Counter()
        self.reports: Counter[LabelValues] = Counter()  # token reports after the answer (Limitador's report_calls)

    def collect(self) -> Iterator[Metric]:
        """The families, as prometheus_client collectors yield them."""
        per_user = [(self.schema.authorized, "Authorized calls", self.authorized, self.label_names),
                    (self.schema.limited, "Limited calls", self.limited, self.label_names)]
        if self.schema.token_hits:
            per_user.append((self.schema.token_hits, "Authorized hits", self.token_hits, self.report_label_names))
        if self.schema.reports:
            per_user.append((self.schema.reports, "Report calls", self.reports, self.report_label_names))
        for name, help_text, counts, label_names in per_user:
            yield self._family(name, help_text, label_names, counts)
        if self.schema.authorized != "authorized_calls":  # seed: Limitador's own namespace totals exist beside
            for name, help_text, counts, _ in per_user[:2]:
                yield self._family(name.removesuffix("_with_user_and_group"), help_text,
                                   (self.schema.namespace_label,), Counter({(): sum(counts.values())}))
        up = Metric("limitador_up", "Limitador is running", "gauge")
        up.add_sample("limitador_up", {}, 1)
        yield up

    def _family(self, name: str, help_text: str, label_names: tuple[str, ...], counts: Counter) -> Metric:
        # Limitador names counters without `_total`; prometheus_client would add it to a "counter" family,
        # so the family is built untyped and its TYPE line corrected in render().
        family = Metric(name, help_text, "unknown")
        for values, count in counts.items():
            if count:
                family.add_sample(name, dict(zip(label_names, (self.namespace,) + values)), count)
        return family

    def render(self) -> bytes:
        """The text exposition, as Limitador serves it."""
        return generate_latest(self).replace(b" untyped\n", b" counter\n")  # type: ignore[arg-type]


AUTH_STATUSES = ("OK", "UNAUTHENTICATED", "PERMISSION_DENIED")


class AuthorinoMetrics:
    """Authorino's per-AuthConfig counters of its /server-metrics: `auth_server_authconfig_total` and
    `auth_server_authconfig_response_status` (labels `namespace`, `authconfig`, `status`), plus
    `auth_server_response_status` (`status` only), as Authorino names them (no `_total` suffix added)."""

    def __init__(self, namespace: str, authconfig: str):
        self.labels = {"namespace": namespace, "authconfig": authconfig}
        self.statuses: Counter[str] = Counter()

    def count(self, status: str) -> None:
        """One auth decision: OK, UNAUTHENTICATED or PERMISSION_DENIED."""
        self.statuses[status] += 1

    def collect(self) -> Iterator[Metric]:
        """The families, as prometheus_client collectors yield them."""
        total = Metric("auth_server_authconfig_total", "Total number of authconfigs enforced by the auth server, "
                       "partitioned by authconfig.", "unknown")
        if self.statuses:
            total.add_sample(total.name, self.labels, sum(self.statuses.values()))
        yield total
        per_config = Metric("auth_server_authconfig_response_status", "Response status of authconfigs sent by the "
                            "auth server, partitioned by authconfig.", "unknown")
        overall = Metric("auth_server_response_status", "Response status of authconfigs sent by the auth server.",
                         "unknown")
        for status in AUTH_STATUSES:
            if self.statuses[status]:
                per_config.add_sample(per_config.name, {**self.labels, "status": status}, self.statuses[status])
                overall.add_sample(overall.name, {"status": status}, self.statuses[status])
        yield per_config
        yield overall

    def render(self) -> bytes:
        """The text exposition of /server-metrics."""
        return generate_latest(self).replace(b" untyped\n", b" counter\n")  # type: ignore[arg-type]
