"""Preflight's limits diff against the stand-in's `GET /limits/{ns}`: the stand-in started with the demo policy passes;
started with one limit changed, preflight, `chargeback limits --limitador-url` and a Locust run each stop on one line
naming that limit, and the Locust run sends nothing."""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_locust_e2e import locust_args
from test_plan import DEPLOY, ROOT

from chargeback.cli import main
from chargeback.plan import load_plan
from chargeback.preflight import PreflightError, preflight
from sim.process import ManagedProcess
from sim.prometheus import free_port

pytestmark = pytest.mark.e2e

PREMIUM = "limit premium-user-requests (limit.premium_user_requests__3466dc78, 10 per 120 s)"
WHERE = "GET /limits/llm%2Fvllm-httproute"


def start_gateway(policy: Path, workdir: Path) -> Iterator[str]:
    """The stand-in gateway alone (no Prometheus) with `policy`, until the generator is closed: its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = ManagedProcess("gateway", [sys.executable, "-m", "sim.gateway", "--policy", str(policy), "--port",
                                         str(port)], str(workdir / f"gateway-{port}.log"), f"{url}/status",
                             cwd=str(ROOT))
    process.start()
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from start_gateway(DEPLOY, tmp_path_factory.mktemp("honest"))


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in enforcing the demo policy with the premium limit at 5 instead of 10."""
    folder = tmp_path_factory.mktemp("changed") / "kuadrant"
    shutil.copytree(DEPLOY, folder)
    rlp = folder / "rate-limit-policy.yaml"
    text = rlp.read_text()
    assert text.count("limit: 10\n") == 1
    rlp.write_text(text.replace("limit: 10\n", "limit: 5\n"))
    yield from start_gateway(folder, folder.parent)


def test_preflight_passes_when_limitador_holds_the_policys_limits(
        honest: str, capsys: pytest.CaptureFixture[str]) -> None:
    sources = preflight(load_plan([DEPLOY]), honest, limitador_url=honest)
    assert sources.namespace == "llm/vllm-httproute" and sources.limitador is not None
    assert main(["limits", "--limitador-url", honest]) == 0
    assert capsys.readouterr().out == f"Limitador at {honest} holds the 3 limits of the policies in llm/vllm-httproute\n"


def test_a_changed_limit_stops_preflight_and_the_cli_with_one_line(
        changed: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = f"Limitador at {changed}: {PREMIUM} has max_value 5 in {WHERE}, the policy says 10"
    with pytest.raises(PreflightError) as err:
        preflight(load_plan([DEPLOY]), changed, limitador_url=changed)
    assert str(err.value) == line
    assert main(["limits", "--limitador-url", changed]) == 1
    assert capsys.readouterr().err == line + "\n"


def test_a_locust_run_against_a_changed_limit_sends_nothing(changed: str, tmp_path: Path) -> None:
    args = locust_args(changed, tmp_path / "runs", [DEPLOY], "--headless", "--scenario", "seed-demo",
                       "--limitador-url", changed)
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Limitador at {changed}: {PREMIUM} has max_value 5 in {WHERE}, the policy says 10; no request was sent")
    assert not (tmp_path / "runs" / "latest").exists()
    assert requests.get(f"{changed}/counters/llm%2Fvllm-httproute", timeout=5).json() == []  # no window was opened
