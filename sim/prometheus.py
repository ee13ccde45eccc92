"""Launch a real Prometheus server for a local test stack."""
from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import urllib.request

import yaml

from chargeback.prometheus import parse_timestamp

from .process import ManagedProcess


class PrometheusNotFound(RuntimeError):
    """The prometheus binary could not be located."""


def find_binary() -> str:
    """Return the prometheus binary: $PROMETHEUS_BIN, else the one on PATH."""
    env = os.environ.get("PROMETHEUS_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise PrometheusNotFound(f"PROMETHEUS_BIN={env} is not an executable file")
        return env
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusNotFound(
            "prometheus binary not found on PATH (set PROMETHEUS_BIN or "
            "install it with: apt-get install prometheus)"
        )
    return found


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not bind `port` on `host` now (something is bound or listening there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a TIME_WAIT port is free
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def render_config(targets: list[str], job: str = "limitador", scrape_interval: str = "1s",
                  metrics_path: str = "/metrics", rule_files: list[str] | None = None,
                  extra_jobs: list[str] | None = None,
                  other_jobs: dict[str, tuple[list[str], str]] | None = None,
                  metrics_paths: dict[str, str] | None = None) -> str:
    """Return prometheus.yml text scraping `targets` (host:port) as `job` every `scrape_interval`, again as each of
    `extra_jobs` (duplicate series, as two ServiceMonitors on one Limitador give), and each of `other_jobs`
    (name -> (targets, interval)) at its own interval; `metrics_paths` (job -> path) overrides `metrics_path`."""
    jobs = [(name, list(targets), scrape_interval) for name in [job, *(extra_jobs or [])]]
    jobs += [(name, list(other), interval) for name, (other, interval) in (other_jobs or {}).items()]
    config: dict = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [{
            "job_name": name,
            "scrape_interval": interval,
            "metrics_path": (metrics_paths or {}).get(name, metrics_path),
            "static_configs": [{"targets": job_targets}],
        } for name, job_targets, interval in jobs],
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    return yaml.safe_dump(config, sort_keys=False)


class PrometheusServer:
    """A Prometheus process bound to 127.0.0.1, usable as a context manager."""

    def __init__(self, targets: list[str], port: int = 0, job: str = "limitador",
                 scrape_interval: str = "1s", data_dir: str | None = None,
                 binary: str | None = None, extra_rule_files: list[str] | None = None,
                 extra_jobs: list[str] | None = None,
                 other_jobs: dict[str, tuple[list[str], str]] | None = None,
                 metrics_paths: dict[str, str] | None = None) -> None:
        self.targets = list(targets)
        self.port = port or free_port()
        self.job = job
        self.extra_jobs = list(extra_jobs or [])
        self.other_jobs = dict(other_jobs or {})
        self.metrics_paths = dict(metrics_paths or {})
        self.scrape_interval = scrape_interval
        self.binary = binary or find_binary()
        self.rule_files = list(extra_rule_files or [])
        self._owns_data_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="prometheus-")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.data_dir, "prometheus.log")
        self.process: ManagedProcess | None = None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start the server and block until /-/ready answers 200."""
        os.makedirs(self.data_dir, exist_ok=True)
        config_path = os.path.join(self.data_dir, "prometheus.yml")
        with open(config_path, "w") as f:
            f.write(render_config(self.targets, self.job, self.scrape_interval, rule_files=self.rule_files,
                                  extra_jobs=self.extra_jobs, other_jobs=self.other_jobs,
                                  metrics_paths=self.metrics_paths))
        self.process = ManagedProcess(
            "prometheus",
            [self.binary, f"--config.file={config_path}",
             f"--storage.tsdb.path={os.path.join(self.data_dir, 'tsdb')}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1d", "--log.level=warn"],
            self.log_path, f"{self.url}/-/ready")
        try:
            self.process.start(timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def last_scrapes(self, job: str) -> list[float]:
        """Epoch seconds of the last successful scrape of each healthy target of `job`."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets?state=active", timeout=5) as response:
            targets = json.load(response)["data"]["activeTargets"]
        return [parse_timestamp(t["lastScrape"]) for t in targets
                if t["labels"].get("job") == job and t.get("health") == "up"]

    def wait_for_scrape(self, jobs: list[str], targets: int, after: float, timeout: float) -> None:
        """Until each of `jobs` has `targets` healthy targets, each scraped after `after` (epoch s); a one-line
        RuntimeError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        for job in jobs:
            while True:
                try:
                    scrapes = self.last_scrapes(job)
                except (OSError, ValueError, KeyError):
                    scrapes = []
                if len(scrapes) >= targets and min(scrapes) > after:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Prometheus at {self.url}: {targets} target(s) of job {job} were not all "
                                       f"scraped within {timeout:g}s")
                time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group; remove a temp data dir."""
        if self.process is not None:
            self.process.stop(timeout)
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
