"""The local stand-in: the gateway (in its own process) and a real Prometheus scraping it."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from chargeback.plan import DEFAULT_POLICY
from chargeback.prometheus import PrometheusSource

from .process import ManagedProcess
from .prometheus import PrometheusServer, free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


class LocalStack:
    """Gateway + Prometheus on loopback ports; `start()` returns once Prometheus has scraped the gateway.

    `rule_files` (e.g. deploy/prometheus/chargeback-rules-<schema>.yaml) are loaded into Prometheus; each of
    `extra_jobs` scrapes the gateway once more (duplicate series, as from two monitors).
    """

    def __init__(self, policies: list[str] | None = None, schema: str = "seed", gateway_port: int = 0,
                 prometheus_port: int = 0, namespace: str | None = None, ttft: float = 0.0,
                 per_token: float = 0.0, scrape_interval: str = "1s", faults: list[str] | None = None,
                 rule_files: list[str] | None = None, extra_jobs: list[str] | None = None):
        self.policies = policies or [DEFAULT_POLICY]
        self.schema = schema
        self.gateway_port = gateway_port or free_port()
        self.prometheus_port = prometheus_port or free_port()
        self.gateway_url = f"http://127.0.0.1:{self.gateway_port}"
        self.workdir = tempfile.mkdtemp(prefix="chargeback-stack-")
        argv = [sys.executable, "-m", "sim.gateway", "--port", str(self.gateway_port), "--schema", schema,
                "--ttft", str(ttft), "--per-token", str(per_token)]
        argv += [arg for policy in self.policies for arg in ("--policy", str(Path(policy).resolve()))]
        if namespace:
            argv += ["--namespace", namespace]
        self._gateway_argv = argv
        self.gateway = self._gateway_process(faults or [])
        try:
            self.prometheus = PrometheusServer([f"127.0.0.1:{self.gateway_port}"], port=self.prometheus_port,
                                               scrape_interval=scrape_interval,
                                               data_dir=os.path.join(self.workdir, "prometheus"),
                                               extra_rule_files=[str(Path(f).resolve()) for f in rule_files or []],
                                               extra_jobs=extra_jobs)
        except RuntimeError:  # no prometheus binary: leave no working folder behind
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.prometheus_url = self.prometheus.url

    def _gateway_process(self, faults: list[str]) -> ManagedProcess:
        argv = self._gateway_argv + [arg for fault in faults for arg in ("--fault", fault)]
        return ManagedProcess("gateway", argv, os.path.join(self.workdir, "gateway.log"), f"{self.gateway_url}/status",
                              cwd=str(REPO_ROOT))

    def restart_gateway(self, faults: list[str] | None = None, timeout: float = 30.0) -> None:
        """A fresh gateway on the same port (counters and windows start again, as after a Limitador restart),
        with the given faults; returns once Prometheus has scraped it (the old series are stale by then)."""
        self.gateway.stop()
        self.gateway = self._gateway_process(faults or [])
        self.gateway.start(timeout)
        PrometheusSource(self.prometheus_url).wait_for_scrape(after=time.time(), timeout=timeout)  # old series gone

    def start(self, timeout: float = 30.0) -> "LocalStack":
        """Start both; wait until Prometheus has scraped the gateway once (it applies targets after ~5 s)."""
        try:
            self.gateway.start(timeout)
            self.prometheus.start(timeout)
            PrometheusSource(self.prometheus_url).wait_for_scrape(after=time.time(), timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop Prometheus and the gateway with their children; remove the working folder."""
        self.prometheus.stop()
        self.gateway.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
