"""Tests for sim.prometheus against the real prometheus binary."""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from sim.process import ManagedProcess
from sim.prometheus import PrometheusNotFound, PrometheusServer, find_binary, free_port, port_in_use, render_config

METRICS = b"# TYPE demo_total counter\ndemo_total 7\n"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.load(resp)


class MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path != "/metrics":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(METRICS)))
        self.end_headers()
        self.wfile.write(METRICS)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_target():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), MetricsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_render_config_structure() -> None:
    config = yaml.safe_load(render_config(["127.0.0.1:8080"], job="lim", scrape_interval="2s"))
    assert config["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s"}
    (scrape,) = config["scrape_configs"]
    assert scrape["job_name"] == "lim"
    assert scrape["metrics_path"] == "/metrics"
    assert scrape["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]
    assert "rule_files" not in config


@pytest.mark.e2e
def test_real_server_scrapes_target(metrics_target: str) -> None:
    prom = PrometheusServer(targets=[metrics_target])
    with prom:
        value = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            result = get_json(f"{prom.url}/api/v1/query?query=demo_total")["data"]["result"]
            if result:
                value = result[0]["value"][1]
                if value == "7":
                    break
            time.sleep(0.25)
        assert value == "7"
        assert float(value) == 7
        targets = get_json(f"{prom.url}/api/v1/targets")["data"]["activeTargets"]
        assert [(t["labels"]["instance"], t["health"]) for t in targets] == [(metrics_target, "up")]
    assert prom.process is not None and not prom.process.running
    assert not os.path.exists(prom.data_dir)


def test_find_binary_bad_env_path(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    missing = str(tmp_path / "no-such-prometheus")
    monkeypatch.setenv("PROMETHEUS_BIN", missing)
    with pytest.raises(RuntimeError) as err:
        find_binary()
    assert "PROMETHEUS_BIN" in str(err.value) and missing in str(err.value)


def test_find_binary_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_BIN", raising=False)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(PrometheusNotFound) as err:
        find_binary()
    assert "apt-get" in str(err.value) and "PROMETHEUS_BIN" in str(err.value)


@pytest.mark.e2e
def test_start_on_busy_port_fails_cleanly() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        prom = PrometheusServer(targets=["127.0.0.1:1"], port=port)
        started = time.monotonic()
        with pytest.raises(RuntimeError) as err:
            prom.start(timeout=10)
        assert time.monotonic() - started < 12
    assert prom.url in str(err.value)
    assert "\n" not in str(err.value)
    assert prom.process is not None and not prom.process.running
    assert not os.path.exists(prom.data_dir)


class AnswerEverything(BaseHTTPRequestHandler):
    """Another server on the port: 200 to every GET, as another Prometheus's /-/ready would."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_render_config_gives_each_job_its_interval() -> None:
    config = yaml.safe_load(render_config(["127.0.0.1:1", "127.0.0.1:2"], scrape_interval="30s", extra_jobs=["copy"],
                                          other_jobs={"prometheus-self": (["127.0.0.1:9090"], "20s")}))
    assert config["global"] == {"scrape_interval": "30s", "evaluation_interval": "30s"}
    assert [(s["job_name"], s["scrape_interval"], s["static_configs"]) for s in config["scrape_configs"]] == [
        ("limitador", "30s", [{"targets": ["127.0.0.1:1", "127.0.0.1:2"]}]),
        ("copy", "30s", [{"targets": ["127.0.0.1:1", "127.0.0.1:2"]}]),
        ("prometheus-self", "20s", [{"targets": ["127.0.0.1:9090"]}]),
    ]


@pytest.mark.e2e
def test_another_server_answering_the_ready_url_is_not_taken_for_ours() -> None:
    other = ThreadingHTTPServer(("127.0.0.1", 0), AnswerEverything)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        prom = PrometheusServer(targets=["127.0.0.1:1"], port=other.server_address[1])
        with pytest.raises(RuntimeError) as err:
            prom.start(timeout=10)
    finally:
        other.shutdown()
        other.server_close()
    assert str(err.value).startswith(f"prometheus at {prom.url}/-/ready exited; log: ")
    assert "address already in use" in str(err.value)
    assert prom.process is not None and not prom.process.running


def test_kill_ends_the_child_as_a_crash(tmp_path) -> None:
    port = free_port()
    process = ManagedProcess("server", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             str(tmp_path / "server.log"), f"http://127.0.0.1:{port}/", cwd=str(tmp_path))
    process.start(timeout=10)
    assert process.running and process.returncode is None
    process.kill()
    assert (process.running, process.returncode) == (False, -9)
    assert not port_in_use(port)


def test_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)
