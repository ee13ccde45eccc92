"""Reading counters from Prometheus through prometheus-api-client: the gateway's scrape targets, a barrier on their
next scrape, and raw values at chosen instants."""
from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from pathlib import Path

import requests
import urllib3
from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from urllib3.util.retry import Retry

from .counters import Series, Snapshot, walk
from .plan import parse_window
from .schema import candidate_metrics


def per_user_series() -> str:
    """The per-user series of every registered metric schema."""
    return f'{{__name__=~"{"|".join(candidate_metrics())}", user!=""}}'


def limitador_series() -> str:
    """The series that mark a Limitador target: `limitador_up`, or any registered schema's counters."""
    return f'{{__name__=~"limitador_up|{"|".join(candidate_metrics())}"}}'

BARRIER_SLACK = 5.0  # seconds beyond two scrape intervals before the barrier gives up


TOKEN_ENV = "PROMETHEUS_TOKEN"
TOKEN_HINT = f"--prometheus-token, --prometheus-token-file or ${TOKEN_ENV}"
PROMETHEUS_AUTH_OPTIONS: tuple[tuple[str, dict[str, object]], ...] = (  # Locust's, the checks' and the CLI's
    ("--prometheus-token", {"metavar": "TOKEN", "help": "bearer token for a Prometheus behind auth (a command line "
                            "shows in `ps`: prefer --prometheus-token-file or $PROMETHEUS_TOKEN)"}),
    ("--prometheus-token-file", {"metavar": "FILE", "help": "file holding the bearer token for Prometheus (e.g. a "
                                 "service account's token), used when --prometheus-token is not given"}),
    ("--prometheus-ca", {"metavar": "FILE", "help": "CA certificate(s) (PEM) that Prometheus's TLS certificate is "
                         "checked against (default: the system's)"}),
    ("--insecure", {"action": "store_true", "default": False,
                    "help": "do not check Prometheus's TLS certificate"}),
)


class MetricsSourceError(RuntimeError):
    """A metrics source that cannot be reached or answered badly; one line naming the URL."""


class PrometheusDenied(MetricsSourceError):
    """Prometheus refused the credentials (401/403), or its TLS certificate is not trusted: asking again will not
    help."""


@dataclass(frozen=True)
class PrometheusAuth:
    """How to reach a Prometheus behind auth (e.g. OpenShift's thanos-querier): a bearer token, the CA of its TLS
    certificate, or no TLS check. The token is never shown: not in its repr, errors, logs or run records."""

    token: str | None = field(default=None, repr=False)
    token_from: str | None = None  # where the token came from: --prometheus-token, the token file, $PROMETHEUS_TOKEN
    ca: str | None = None
    insecure: bool = False

    @classmethod
    def resolve(cls, token: str | None = None, token_file: str | None = None, ca: str | None = None,
                insecure: bool = False, environ: Mapping[str, str] = os.environ) -> PrometheusAuth:
        """The token of --prometheus-token, else of --prometheus-token-file, else $PROMETHEUS_TOKEN; a ValueError
        (one line naming the option or file, never the token) for a file that cannot be read or a malformed
        token."""
        if ca and not Path(ca).is_file():
            raise ValueError(f"--prometheus-ca {ca}: no such file")
        if token:
            found, origin = token, "--prometheus-token"
        elif token_file:
            try:
                found, origin = Path(token_file).read_text().strip(), f"--prometheus-token-file {token_file}"
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise ValueError(f"--prometheus-token-file {token_file}: cannot read it ({reason})") from None
            if not found:
                raise ValueError(f"--prometheus-token-file {token_file}: the file is empty")
        elif environ.get(TOKEN_ENV):
            found, origin = environ[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
        else:
            return cls(None, None, ca, insecure)
        if not (found.isascii() and found.isprintable()) or " " in found:
            raise ValueError(f"{origin}: the token holds spaces, control or non-ASCII characters (one token expected)")
        return cls(found, origin, ca, insecure)

    def session(self) -> requests.Session:
        """A requests session sending the token and checking TLS as asked."""
        session = requests.Session()
        session.verify = False if self.insecure else self.ca or True
        if self.insecure:  # asked for: no warning on every request
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        if self.token:
            session.headers["Authorization"] = f"Bearer {self.token}"
        return session

    def to_record(self) -> dict[str, object]:
        """What a run record keeps: where the token came from (never the token), the CA file, --insecure."""
        return {"token": self.token_from, "ca": self.ca, "insecure": self.insecure}

    def child_args(self) -> list[str]:
        """The options giving a child process (the checks, run in another folder) the same CA and TLS choice."""
        return (["--prometheus-ca", str(Path(self.ca).resolve())] if self.ca else []) + (
            ["--insecure"] if self.insecure else [])

    def child_env(self) -> dict[str, str]:
        """The environment giving a child process the token (not its command line, which `ps` shows)."""
        return {TOKEN_ENV: self.token} if self.token else {}


def denied(url: str, status: int, auth: PrometheusAuth) -> str:
    """The one line for a 401/403: the URL, the status, where the token came from (never the token)."""
    sent = (f"with the token of {auth.token_from} (check it)" if auth.token else
            f"without a token (give one with {TOKEN_HINT})")
    return f"Prometheus at {url}: HTTP {status} {HTTPStatus(status).phrase} {sent}"


def tls_failed(url: str, exc: requests.exceptions.SSLError) -> str:
    """The one line for a TLS failure: the URL, OpenSSL's reason, what to pass."""
    reason = re.search(r"\[SSL: \w+\] ([^(]+?)\s*\(_ssl", str(exc))
    return (f"Prometheus at {url}: TLS: {reason[1] if reason else type(exc).__name__}; trust its certificate's CA "
            "with --prometheus-ca FILE, or skip the check with --insecure")


def parse_timestamp(text: str) -> float:
    """Epoch seconds of an RFC 3339 time as Prometheus writes it (nanoseconds and `Z` included)."""
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


@dataclass(frozen=True)
class Target:
    """One scrape target serving the gateway's Limitador metrics (one per Limitador replica)."""

    job: str
    instance: str
    interval: float  # its own scrape interval, seconds
    timeout: float

    def to_dict(self) -> dict[str, object]:
        return {"job": self.job, "instance": self.instance, "interval": self.interval, "timeout": self.timeout}


class PrometheusSource:
    """Instant and range queries, and a scrape barrier on the gateway's own targets only."""

    def __init__(self, url: str, job: str | None = None, timeout: float = 5.0, auth: PrometheusAuth | None = None):
        self.url = url.rstrip("/")
        self.job = job
        self.auth = auth or PrometheusAuth()
        self._targets: list[Target] | None = None
        self._client = PrometheusConnect(url=self.url, session=self.auth.session(), timeout=timeout,
                                         retry=Retry(total=1, backoff_factor=0.1))

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise PrometheusDenied(tls_failed(self.url, exc)) from None
        except requests.RequestException as exc:
            raise MetricsSourceError(f"Prometheus at {self.url}: cannot {what}: {type(exc).__name__}") from None
        except PrometheusApiClientException as exc:
            status = re.match(r"HTTP Status Code (\d+)", str(exc))
            if status and int(status[1]) in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
                raise PrometheusDenied(denied(self.url, int(status[1]), self.auth)) from None
            raise MetricsSourceError(f"Prometheus at {self.url}: {what} failed: {exc}") from None
        except (ValueError, KeyError) as exc:
            raise MetricsSourceError(f"Prometheus at {self.url}: {what} failed: {exc}") from None

    def _active_targets(self) -> list[dict]:
        return self._call("read /api/v1/targets", self._client.get_targets, state="active").get("activeTargets", [])

    def targets(self) -> list[Target]:
        """The targets serving the gateway's counters: those of `job`, else those whose series include
        limitador_up or a chargeback metric; each must be up. One-line errors otherwise."""
        if self._targets is not None:
            return self._targets
        active = self._active_targets()
        if self.job is not None:
            chosen = [t for t in active if t["labels"].get("job") == self.job]
            if not chosen:
                jobs = sorted({t["labels"].get("job", "?") for t in active})
                raise MetricsSourceError(f"Prometheus at {self.url}: no active target of job {self.job!r} "
                                         f"(jobs: {', '.join(jobs) or 'none'})")
        else:
            serving = {(labels.get("job"), labels.get("instance"))
                       for labels, _ in self.vector(f"group by (job, instance) ({limitador_series()})")}
            chosen = [t for t in active if (t["labels"].get("job"), t["labels"].get("instance")) in serving]
            if not chosen:
                raise MetricsSourceError(f"Prometheus at {self.url}: no scrape target serves Limitador's metrics "
                                         "(no limitador_up or chargeback series); is the gateway's Limitador "
                                         "scraped? --job names its scrape job")
        down = [t for t in chosen if t.get("health") != "up"]
        if down:
            raise MetricsSourceError(f"Prometheus at {self.url}: the gateway's target {down[0]['scrapeUrl']} is "
                                     f"{down[0].get('health')}: {down[0].get('lastError') or 'not scraped yet'}")
        self._targets = [Target(t["labels"]["job"], t["labels"].get("instance", ""),
                                parse_window(t.get("scrapeInterval") or "15s"),
                                parse_window(t.get("scrapeTimeout") or "10s")) for t in chosen]
        return self._targets

    def use_targets(self, targets: list[Target]) -> None:
        """Take the targets found before (by the run), instead of discovering them again."""
        self._targets = list(targets)

    def barrier_timeout(self) -> float:
        """How long a scrape of every target may take to come: two of their intervals, their timeout and slack."""
        targets = self.targets()
        return 2 * max(t.interval for t in targets) + max(t.timeout for t in targets) + BARRIER_SLACK

    def target_scrapes(self, since: float, at: float) -> dict[Target, list[tuple[float, float]]]:
        """target -> its `up` samples (time, value) in (since, at]."""
        span = f"{max(1, int((at - since) * 1000) + 1)}ms"
        found: dict[Target, list[tuple[float, float]]] = {t: [] for t in self.targets()}
        by_key = {(t.job, t.instance): t for t in found}
        for job in sorted({t.job for t in found}):
            for labels, samples in self.matrix(f"up{{job={json.dumps(job)}}}[{span}]", at):
                target = by_key.get((labels.get("job"), labels.get("instance")))
                if target is not None:
                    found[target] = [(t, v) for t, v in samples if t > since]
        return found

    def scrape_after(self, after: float, timeout: float | None = None) -> float:
        """The moment every gateway target has been scraped since `after` (epoch s), waiting for it (bounded by the
        targets' own interval): the latest of their first scrapes after `after`. Raises when a target was down at
        that scrape, or none came in time."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.barrier_timeout())
        while True:
            scrapes = self.target_scrapes(after, time.time() + 1)
            firsts = {target: samples[0] for target, samples in scrapes.items() if samples}
            for target, (_, up) in firsts.items():
                if up != 1:
                    raise MetricsSourceError(f"Prometheus at {self.url}: the gateway's target {target.instance} "
                                             f"(job {target.job}) was down at its first scrape after the moment "
                                             f"that mattered: {self._last_error(target)}")
            if len(firsts) == len(scrapes):
                return max(t for t, _ in firsts.values())
            if time.monotonic() > deadline:
                waiting = ", ".join(t.instance for t in scrapes if t not in firsts)
                raise MetricsSourceError(f"Prometheus at {self.url}: no scrape of the gateway's target(s) "
                                         f"{waiting} within {self.barrier_timeout():g} s")
            time.sleep(0.1)

    def last_scrape_before(self, moment: float, since: float) -> float | None:
        """The latest moment in (since, moment] at which every gateway target had been scraped successfully."""
        scrapes = self.target_scrapes(since, moment)
        lasts = [[t for t, up in samples if up == 1] for samples in scrapes.values()]
        return min(times[-1] for times in lasts) if lasts and all(lasts) else None

    def _last_error(self, target: Target) -> str:
        for t in self._active_targets():
            if (t["labels"].get("job"), t["labels"].get("instance")) == (target.job, target.instance):
                return t.get("lastError") or t.get("health", "down")
        return "no longer a target"

    def vector(self, query: str, at: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant vector: (labels, value) per series, at time `at` (epoch s) or now."""
        params = {"time": f"{at:.3f}"} if at is not None else None
        result = self._call(f"query {query!r}", self._client.custom_query, query, params=params)
        return [(series["metric"], float(series["value"][1])) for series in result]

    def snapshot(self, at: float | None = None) -> Snapshot:
        """Every per-user chargeback series, raw, at `at` (epoch s) or now."""
        series: dict[str, Series] = {}
        for labels, value in self.vector(per_user_series(), at):
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

    def history(self, start: float, end: float, metrics: tuple[str, ...] | None = None
                ) -> list[tuple[str, dict[str, str], list[tuple[float, float]], list[float]]]:
        """Every per-user series of `metrics` (default: every registered schema's) between `start` and `end`:
        (metric, labels, raw samples, its target's successful scrape times)."""
        window = f"{max(1, int(end - start + 0.999))}s"
        scrapes = self.scrapes(window, end)
        return [(name, labels, samples, scrapes.get((labels.get("job"), labels.get("instance")), []))
                for name in metrics or candidate_metrics()
                for labels, samples in self.matrix(f'{name}{{user!=""}}[{window}]', end)]

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
