"""`python -m chargeback stack up`: prints its URLs, serves, and stops everything on SIGTERM; clear errors."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from test_plan import ROOT, write

pytestmark = pytest.mark.e2e


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chargeback", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_stack_up_serves_and_stops_on_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-m", "chargeback", "stack", "up", "--gateway-port", "0",
                                "--prometheus-port", "0", "--schema", "telemetry"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(4)]  # bounded: the stack prints four lines when ready
        assert lines[0].startswith("starting: 5 identities, 3 limits, schema telemetry")
        gateway = re.search(r"gateway\s+(http://127\.0\.0\.1:\d+)", lines[1]).group(1)
        prometheus = re.search(r"prometheus\s+(http://127\.0\.0\.1:\d+)", lines[2]).group(1)
        assert lines[3].startswith("ready")
        with urllib.request.urlopen(f"{gateway}/metrics", timeout=5) as response:
            assert b"limitador_up 1.0" in response.read()
        with urllib.request.urlopen(f"{prometheus}/api/v1/query?query=limitador_up", timeout=5) as response:
            assert b'"value":[' in response.read()
        children = children_of(process.pid)
        assert len(children) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out.strip().endswith("stopped"), err
    time.sleep(0.2)
    assert [pid for pid in children if alive(pid)] == []


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries CHARGEBACK_TEST_MARK=mark (what a command started, orphans too)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("CHARGEBACK_TEST_MARK") == mark and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


@pytest.mark.parametrize("flag", ["--gateway-port", "--prometheus-port"])
def test_stack_up_names_a_port_in_use_and_starts_nothing(flag: str) -> None:
    mark = f"port-in-use-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        ports = {"--gateway-port": "0", "--prometheus-port": "0", flag: str(port)}
        result = run_cli("stack", "up", *(arg for item in ports.items() for arg in item),
                         env={"CHARGEBACK_TEST_MARK": mark})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"error: port {port} on 127.0.0.1 is in use ({flag})\n"
    assert marked(mark) == []


def test_stack_up_with_replicas_reports_a_child_that_dies_and_stops_the_rest() -> None:
    process = subprocess.Popen([sys.executable, "-m", "chargeback", "stack", "up", "--gateway-port", "0",
                                "--prometheus-port", "0", "--replicas", "2", "--replica-storage", "separate"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(5)]  # bounded: five lines when ready, EOF on failure
        replica = re.search(r"^replica 1\s+(http://127\.0\.0\.1:\d+)  \(Limitador .*; separate storage\)$", lines[2])
        assert lines[4].startswith("ready"), lines
        with urllib.request.urlopen(f"{replica.group(1)}/status", timeout=5) as response:
            assert json.load(response)["config_err_since"] is None
        children = psutil.Process(process.pid).children()
        [gateway] = [c for c in children if "sim.gateway" in " ".join(c.cmdline())]
        [prometheus] = [c.pid for c in children if c.pid != gateway.pid]
        gateway.send_signal(signal.SIGKILL)
        started = time.monotonic()
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert time.monotonic() - started < 5  # polled every 0.5 s
    assert process.returncode == 1
    assert re.fullmatch(r"error: gateway exited with code -9; log: [^\n]*\n", err), err
    assert "stopped" not in out
    time.sleep(0.2)
    assert not alive(prometheus)


def test_stack_up_names_a_missing_prometheus_binary() -> None:
    result = run_cli("stack", "up", "--gateway-port", "0", "--prometheus-port", "0",
                     env={"PROMETHEUS_BIN": "/nonexistent/prometheus"})
    assert result.returncode == 2
    assert result.stderr == "error: PROMETHEUS_BIN=/nonexistent/prometheus is not an executable file\n"


def test_stack_up_names_the_bad_manifest(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", "apiVersion: kuadrant.io/v1\nkind: RateLimitPolicy\n"
                "metadata: {name: x, namespace: llm}\nspec:\n  limits:\n    a:\n      rates: [{limit: 1, window: soon}]\n")
    result = run_cli("stack", "up", "--policy", str(bad))
    assert result.returncode == 2
    assert result.stderr == (f"error: {bad}: RateLimitPolicy llm/x: spec.limits.a.rates[0].window: "
                             "'soon' is not a duration like 30s, 2m or 1h\n")


def demo_rows(stdout: str) -> list[list[str]]:
    """The chargeback table's user rows (the checks' own output comes before it)."""
    table = stdout[stdout.index("\nchargeback for "):]
    return [line.split() for line in table.splitlines() if line.startswith(("premiumuser", "freeuser"))]


def test_demo_runs_the_seed_with_locust_checks_it_and_passes(tmp_path: Path) -> None:
    result = run_cli("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert demo_rows(result.stdout) == [
        ["freeuser1", "free", "2", "3", "24", "0.0020"],
        ["premiumuser1", "premium", "8", "0", "176", "0.0162"],
        ["premiumuser2", "premium", "6", "0", "102", "0.0121"],
    ]
    assert "21 passed, 5 skipped" in result.stdout and "PASS: every check passed" in result.stdout
    assert (tmp_path / "runs" / "latest" / "snapshots.json").exists()


def test_demo_expects_what_the_policy_it_is_given_allows(tmp_path: Path) -> None:
    policy = (ROOT / "deploy" / "kuadrant" / "rate-limit-policy.yaml").read_text().replace("limit: 2\n", "limit: 3\n")
    write(tmp_path, "rate-limit-policy.yaml", policy)
    keys, auth = ROOT / "deploy" / "kuadrant" / "api-keys.yaml", ROOT / "deploy" / "kuadrant" / "auth-policy.yaml"
    result = run_cli("demo", "--policy", str(keys), "--policy", str(auth), "--policy", str(tmp_path / "rate-limit-policy.yaml"),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert [row[2:4] for row in demo_rows(result.stdout) if row[0] == "freeuser1"] == [["3", "2"]]
    assert "PASS: every check passed" in result.stdout
