"""The local stand-in: the gateway (in its own process) and a real Prometheus scraping it."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chargeback.plan import DEFAULT_POLICY, parse_window

from .process import ManagedProcess
from .prometheus import PrometheusServer, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB = "limitador"
SELF_JOB = "prometheus-self"
AUTH_JOB = "authorino"  # Authorino's /server-metrics (in the stand-in, on the gateway's port)
TARGETS_APPLIED = 5.0  # seconds Prometheus takes to apply its targets after start


class LocalStack:
    """Gateway + Prometheus on loopback ports; `start()` returns once Prometheus has scraped the gateway.

    `replicas` limiter replicas (counting in one limiter with `replica_storage` "shared", each in its own with
    "separate") serve their admin routes at `replica_urls` (replica 0's is `gateway_url`), each a target of the job
    `limitador`, scraped every `scrape_interval`. `rule_files` (e.g. deploy/prometheus/chargeback-rules-<schema>.yaml)
    are loaded into Prometheus; each of `extra_jobs` scrapes the gateway once more (duplicate series, as from two
    monitors); `other_target_interval` adds the job `prometheus-self`, Prometheus scraping itself at that interval.
    With `authorino` (default) the job `authorino` scrapes Authorino's `/server-metrics` (the gateway's port) every
    `scrape_interval`. With `rate_limit_headers` the gateway serves Limitador's X-RateLimit-* headers; with
    `overshoot` (seconds) its limiter reads and updates apart, so concurrent requests can overshoot a limit. `models`:
    the models the simulator serves (default its one).
    """

    def __init__(self, policies: list[str] | None = None, schema: str = "seed", gateway_port: int = 0,
                 prometheus_port: int = 0, namespace: str | None = None, ttft: float = 0.0,
                 per_token: float = 0.0, scrape_interval: str = "1s", faults: list[str] | None = None,
                 rule_files: list[str] | None = None, extra_jobs: list[str] | None = None, replicas: int = 1,
                 replica_storage: str = "shared", other_target_interval: str | None = None, authorino: bool = True,
                 rate_limit_headers: bool = False, overshoot: float = 0.0, models: list[str] | None = None):
        self.policies = policies or [DEFAULT_POLICY]
        self.schema = schema
        self.gateway_port = gateway_port or free_port()
        self.prometheus_port = prometheus_port or free_port()
        self.replica_ports = [free_port() for _ in range(replicas - 1)]
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.replica_urls = [self.gateway_url] + [f"http://127.0.0.1:{port}" for port in self.replica_ports]
        self.scrape_interval = scrape_interval
        self.jobs = [JOB, *(extra_jobs or [])]
        self.authorino = authorino
        self.workdir = tempfile.mkdtemp(prefix="chargeback-stack-")
        argv = [sys.executable, "-m", "sim.gateway", "--port", str(self.gateway_port), "--schema", schema,
                "--ttft", str(ttft), "--per-token", str(per_token), "--replica-storage", replica_storage]
        argv += [arg for policy in self.policies for arg in ("--policy", str(Path(policy).resolve()))]
        argv += [arg for port in self.replica_ports for arg in ("--replica-port", str(port))]
        if namespace:
            argv += ["--namespace", namespace]
        argv += [arg for model in models or () for arg in ("--model", model)]
        if rate_limit_headers:
            argv.append("--rate-limit-headers")
        if overshoot:
            argv += ["--overshoot", str(overshoot)]
        self._gateway_argv = argv
        self.gateway = self._gateway_process(faults or [])
        own = [f"127.0.0.1:{self.prometheus_port}"]
        other = {SELF_JOB: (own, other_target_interval)} if other_target_interval else {}
        if authorino:
            other[AUTH_JOB] = ([self.gateway_url.removeprefix("http://")], scrape_interval)
        try:
            self.prometheus = PrometheusServer([url.removeprefix("http://") for url in self.replica_urls],
                                               port=self.prometheus_port, job=JOB, scrape_interval=scrape_interval,
                                               data_dir=os.path.join(self.workdir, "prometheus"),
                                               extra_rule_files=[str(Path(f).resolve()) for f in rule_files or []],
                                               extra_jobs=extra_jobs, other_jobs=other,
                                               metrics_paths={AUTH_JOB: "/server-metrics"})
        except RuntimeError:  # no prometheus binary: leave no working folder behind
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.prometheus_url = self.prometheus.url

    def _gateway_process(self, faults: list[str]) -> ManagedProcess:
        argv = self._gateway_argv + [arg for fault in faults for arg in ("--fault", fault)]
        return ManagedProcess("gateway", argv, os.path.join(self.workdir, "gateway.log"), f"{self.gateway_url}/status",
                              cwd=str(REPO_ROOT))

    def wait_for_scrape(self, after: float, timeout: float = 30.0) -> None:
        """Until every target of the gateway's jobs (and Authorino's) was scraped after `after` (epoch s); the wait is
        at least long enough for Prometheus to apply its targets and scrape twice at `scrape_interval`."""
        wait = max(timeout, TARGETS_APPLIED + 2 * parse_window(self.scrape_interval))
        self.prometheus.wait_for_scrape(self.jobs, len(self.replica_urls), after, wait)
        if self.authorino:
            self.prometheus.wait_for_scrape([AUTH_JOB], 1, after, wait)

    def kill_gateway(self) -> None:
        """SIGKILL the gateway, as a crash; returns once it is gone (its counters, windows and metrics with it)."""
        self.gateway.kill()

    def restart_gateway(self, faults: list[str] | None = None, timeout: float = 30.0) -> None:
        """A fresh gateway on the same ports (counters and windows start again, as after a Limitador restart),
        with the given faults; returns once Prometheus has scraped it (the old series are stale by then)."""
        self.gateway.stop()
        self.gateway = self._gateway_process(faults or [])
        self.gateway.start(timeout)
        self.wait_for_scrape(time.time(), timeout)

    def start(self, timeout: float = 30.0) -> LocalStack:
        """Start both; wait until Prometheus has scraped every gateway target once (it applies targets after ~5 s)."""
        try:
            self.gateway.start(timeout)
            self.prometheus.start(timeout)
            self.wait_for_scrape(time.time(), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def exited(self) -> ManagedProcess | None:
        """The first child (gateway, then Prometheus) that has exited since it started, if any."""
        return next((p for p in (self.gateway, self.prometheus.process)
                     if p is not None and p.process is not None and not p.running), None)

    def stop(self) -> None:
        """Stop Prometheus and the gateway with their children; remove the working folder."""
        self.prometheus.stop()
        self.gateway.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
