"""Reading a Limitador-style /metrics URL directly, when there is no Prometheus."""
from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from .counters import Series, Snapshot
from .prometheus import MetricsSourceError
from .schema import candidate_metrics


class MetricsEndpoint:
    """Live counters from the exposition text; nothing to wait for, and no history."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout
        self._now: float | None = None

    def scrape_after(self, after: float, timeout: float | None = None) -> float:
        """The endpoint is read live: a read now comes after `after` (`snapshot` takes this moment as now)."""
        self._now = time.time()
        return self._now

    def preflight(self) -> None:
        """The endpoint answers with Limitador's metrics; a one-line error naming the URL otherwise."""
        names = self._families()
        if "limitador_up" not in names and not names & set(candidate_metrics()):
            raise MetricsSourceError(f"{self.url}: not Limitador's metrics (no limitador_up or chargeback series)")

    def _families(self) -> dict[str, list]:
        """metric family name -> its samples, read now."""
        try:
            response = requests.get(self.url, timeout=self.timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise MetricsSourceError(f"{self.url}: cannot read metrics: {type(exc).__name__}: {exc}") from None
        try:
            return {family.name: family.samples for family in text_string_to_metric_families(response.text)}
        except ValueError as exc:
            raise MetricsSourceError(f"{self.url}: not Prometheus text format: {exc}") from None

    def snapshot(self, at: float | None = None) -> Snapshot:
        if at is not None and at != self._now:
            raise MetricsSourceError(f"{self.url}: a /metrics endpoint has no history (the value at a past time "
                                     "needs Prometheus, or a snapshot taken by Locust with --metrics-url)")
        series: dict[str, Series] = {}
        wanted = set(candidate_metrics())
        for name, samples in self._families().items():
            if name in wanted:
                series[name] = [(dict(s.labels), s.value) for s in samples
                                if s.labels.get("user") and not s.name.endswith("_created")]
        return Snapshot(self.url, time.time(), {k: v for k, v in series.items() if v})

    def resets(self, start: float, end: float) -> dict[str, int]:
        """Unknown here; a counter lower after than before still shows a reset."""
        return {}
