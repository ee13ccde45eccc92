"""Reading a Limitador-style /metrics URL directly, when there is no Prometheus."""
from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from .counters import Series, Snapshot
from .prometheus import MetricsSourceError
from .schema import CANDIDATE_METRICS


class MetricsEndpoint:
    """Live counters from the exposition text; nothing to wait for, and no history."""

    def __init__(self, url: str, timeout: float = 5.0):
        self.url = url
        self.timeout = timeout

    def wait_for_scrape(self, after: float, timeout: float = 30.0) -> float:
        """The endpoint is read live: already fresh."""
        return time.time()

    def snapshot(self, at: float | None = None) -> Snapshot:
        if at is not None:
            raise MetricsSourceError(f"{self.url}: a /metrics endpoint has no history (the value at a past time "
                                     "needs Prometheus, or a snapshot taken by Locust with --metrics-url)")
        try:
            response = requests.get(self.url, timeout=self.timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise MetricsSourceError(f"{self.url}: cannot read metrics: {type(exc).__name__}: {exc}") from None
        series: dict[str, Series] = {}
        try:
            families = list(text_string_to_metric_families(response.text))
        except ValueError as exc:
            raise MetricsSourceError(f"{self.url}: not Prometheus text format: {exc}") from None
        for family in families:
            if family.name in CANDIDATE_METRICS:
                series[family.name] = [(dict(s.labels), s.value) for s in family.samples
                                       if s.labels.get("user") and not s.name.endswith("_created")]
        return Snapshot(self.url, time.time(), {k: v for k, v in series.items() if v})

    def resets(self, start: float, end: float) -> dict[str, int]:
        """Unknown here; a counter lower after than before still shows a reset."""
        return {}
