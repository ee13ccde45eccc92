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

    def __init__(self, schema: MetricSchema, namespace: str, label_names: tuple[str, ...]):
        self.schema = schema
        self.namespace = namespace
        self.label_names = (schema.namespace_label,) + label_names
        self.authorized: Counter[LabelValues] = Counter()
        self.limited: Counter[LabelValues] = Counter()
        self.token_hits: Counter[LabelValues] = Counter()

    def collect(self) -> Iterator[Metric]:
        """The families, as prometheus_client collectors yield them."""
        per_user = [(self.schema.authorized, "Authorized calls", self.authorized),
                    (self.schema.limited, "Limited calls", self.limited)]
        if self.schema.token_hits:
            per_user.append((self.schema.token_hits, "Authorized hits", self.token_hits))
        for name, help_text, counts in per_user:
            yield self._family(name, help_text, self.label_names, counts)
        if self.schema.authorized != "authorized_calls":  # seed: Limitador's own namespace totals exist beside
            for name, help_text, counts in per_user[:2]:
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
