"""Reading counters from Prometheus through prometheus-api-client, after a confirmed scrape."""
from __future__ import annotations

import re
import time
from datetime import datetime

import requests
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from .counters import Series, Snapshot, walk
from .schema import CANDIDATE_METRICS

PER_USER_SERIES = '{__name__=~"%s", user!=""}' % "|".join(CANDIDATE_METRICS)


class MetricsSourceError(RuntimeError):
    """A metrics source that cannot be reached or answered badly; one line naming the URL."""


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an RFC 3339 time as Prometheus writes it (nanoseconds and `Z` included)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


class PrometheusSource:
    """Instant queries and a scrape barrier against one Prometheus server."""

    def __init__(self, url: str, job: str | None = None, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.job = job
        self._client = PrometheusConnect(url=self.url, disable_ssl=True, timeout=timeout,
                                         retry=Retry(total=1, backoff_factor=0.1))

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except requests.RequestException as exc:
            raise MetricsSourceError(f"Prometheus at {self.url}: cannot {what}: {type(exc).__name__}") from None
        except (PrometheusApiClientException, ValueError, KeyError) as exc:
            raise MetricsSourceError(f"Prometheus at {self.url}: {what} failed: {exc}") from None

    def last_scrapes(self) -> dict[str, float]:
        """scrape URL -> epoch seconds of its last successful scrape, for the active targets (of `job` if set)."""
        targets = self._call("read /api/v1/targets", self._client.get_targets, state="active")
        return {
            t["scrapeUrl"]: parse_timestamp(t["lastScrape"])
            for t in targets.get("activeTargets", [])
            if (self.job is None or t["labels"].get("job") == self.job) and t.get("health") == "up"
        }

    def wait_for_scrape(self, after: float, timeout: float = 30.0) -> float:
        """Block until every healthy target was scraped after `after` (epoch s); the latest scrape time.

        Raises MetricsSourceError when no target is up or none was scraped in time (bounded wait).
        """
        deadline = time.monotonic() + timeout
        scrapes: dict[str, float] = {}
        while time.monotonic() < deadline:
            scrapes = self.last_scrapes()
            if scrapes and min(scrapes.values()) > after:
                return max(scrapes.values())
            time.sleep(0.1)
        job = f" of job {self.job}" if self.job else ""
        state = "no target is up" if not scrapes else "no scrape after the last request"
        raise MetricsSourceError(f"Prometheus at {self.url}: {state}{job} within {timeout:g}s")

    def vector(self, query: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series, at time `at` (epoch s) or now."""
        params = {"time": f"{at:.3f}"} if at is not None else None
        result = self._call(f"query {query!r}", self._client.custom_query, query, params=params)
        return [(series["metric"], float(series["value"][1])) for series in result]

    def snapshot(self, at: float | None = None) -> Snapshot:
        """Every per-user chargeback series, raw, at `at` (epoch s; history) or now."""
        series: dict[str, Series] = {}
        for labels, value in self.vector(PER_USER_SERIES, at):
            series.setdefault(labels["__name__"], []).append((labels, value))
        return Snapshot(self.url, at if at is not None else time.time(), series)

    def matrix(self, query: str, at: float) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A range-vector selector evaluated at `at`: the raw samples (time, value) of each series."""
        result = self._call(f"query {query!r}", self._client.custom_query, query, params={"time": f"{at:.3f}"})
        return [(series["metric"], [(float(t), float(v)) for t, v in series["values"]]) for series in result]

    def scrapes(self, window: str, at: float) -> dict[tuple, list[float]]:
        """(job, instance) -> sorted times of the target's successful scrapes in the `window` before `at`."""
        return {(labels.get("job"), labels.get("instance")): sorted(t for t, up in samples if up == 1)
                for labels, samples in self.matrix(f"up[{window}]", at)}

    def history(self, start: float, end: float) -> list[tuple[str, dict[str, str], list[tuple[float, float]], list[float]]]:
        """Every per-user chargeback series between `start` and `end`: (metric, labels, raw samples, its target's
        successful scrape times)."""
        window = f"{max(1, int(end - start + 0.999))}s"
        scrapes = self.scrapes(window, end)
        return [(name, labels, samples, scrapes.get((labels.get("job"), labels.get("instance")), []))
                for name in CANDIDATE_METRICS for labels, samples in self.matrix(f'{name}{{user!=""}}[{window}]', end)]

    def resets(self, start: float, end: float) -> dict[str, int]:
        """user -> how many of its counters restarted between `start` and `end` (epoch s): a fall, a gap in its
        samples while its target was scraped, or no sample in the target's last successful scrapes."""
        found: dict[str, int] = {}
        for _, labels, samples, scrapes in self.history(start, end):
            _, restarts, _ = walk(samples, samples[0][1], scrapes)
            vanished = bool(scrapes) and scrapes[-1] > samples[-1][0]
            if restarts or vanished:
                found[labels["user"]] = found.get(labels["user"], 0) + 1
        return found
