"""Authorino's counters as the server-side witness of the run's 401 and 403, staged for real: another client's
rejected requests before the run (passes), a gateway answering a 401 that Authorino does not count (fails), and a
Prometheus that does not scrape Authorino (cannot decide)."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_locust_e2e import locust_args
from test_plan import DEPLOY, ROOT, secret, write

from chargeback.prometheus import PrometheusSource
from chargeback.verify import gather
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHECK = "test_authorino_counted_the_rejections"
AUTHCONFIG = f"kuadrant-system/{hashlib.sha256(b'llm/vllm-httproute').hexdigest()}"


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The default manifests plus golduser, whose group the AuthPolicy disallows (403)."""
    extra = tmp_path_factory.mktemp("extra")
    write(extra, "gold.yaml", secret("golduser", "gold"))
    return [str(DEPLOY), str(extra)]


@pytest.fixture(scope="module")
def stack(policies: list[str]) -> Iterator[LocalStack]:
    with LocalStack(policies) as running:
        yield running


def bad_keys_run(stack: LocalStack, runs: Path) -> Path:
    """The bad-keys scenario on the running gateway: 3 x 401 (no key), 3 x 401 (unknown key), 3 x 403 (golduser)."""
    result = subprocess.run(locust_args(stack.gateway_url, runs, [Path(p) for p in stack.policies], "--headless",
                                        "--scenario", "bad-keys", "--prometheus-url", stack.prometheus_url),
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return (runs / "latest").resolve()


def outcome(run: Path, tmp_path: Path) -> tuple[str, str]:
    """The witness check's outcome on `run` (passed, failed or skipped) and its message, as `pytest --run` gives."""
    junit = tmp_path / "checks.xml"
    subprocess.run([sys.executable, "-m", "pytest", "--run", str(run), "-p", "no:cacheprovider", f"--junitxml={junit}",
                    "-k", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    case = next(c for c in ElementTree.parse(junit).iter("testcase") if c.get("name") == CHECK)
    for state in ("failure", "skipped"):
        found = case.find(state)
        if found is not None:
            return ("failed" if state == "failure" else "skipped"), found.get("message", "").removeprefix("Failed: ")
    return "passed", ""


def rejections(stack: LocalStack, at: float) -> dict[str, float]:
    """Authorino's UNAUTHENTICATED and PERMISSION_DENIED counters in Prometheus at `at`."""
    series = PrometheusSource(stack.prometheus_url).vector("auth_server_authconfig_response_status", at)
    return {labels["status"]: value for labels, value in series if labels["status"] != "OK"}


def test_the_run_reconciles_with_authorino_after_another_clients_rejections(stack: LocalStack,
                                                                           tmp_path: Path) -> None:
    stack.restart_gateway()
    url = f"{stack.gateway_url}/v1/completions"
    answers = [requests.post(url, json={"model": "m", "prompt": "hi"}, timeout=5, headers=headers).status_code
               for headers in ({}, {"Authorization": "APIKEY nope"}, {"Authorization": "APIKEY golduser_key"})]
    assert answers == [401, 401, 403]
    stack.wait_for_scrape(time.time())  # the other client's rejections are in Authorino's scrape before the run
    run = bad_keys_run(stack, tmp_path / "runs")
    witness = gather(run).auth
    assert witness is not None
    # the raw counters: the other client's 2 + 1, the preflight's GET /v1/models without a key, the run's 6 + 3
    assert rejections(stack, witness.after) == {"UNAUTHENTICATED": 9.0, "PERMISSION_DENIED": 4.0}
    before = rejections(stack, witness.before)
    assert before in ({"UNAUTHENTICATED": 2.0, "PERMISSION_DENIED": 1.0},  # Authorino's scrape before the preflight
                      {"UNAUTHENTICATED": 3.0, "PERMISSION_DENIED": 1.0})  # or after it
    assert (witness.authconfig, witness.counted, witness.restarts) == (
        AUTHCONFIG, {"UNAUTHENTICATED": 9 - before["UNAUTHENTICATED"], "PERMISSION_DENIED": 3}, 0)
    assert outcome(run, tmp_path) == ("passed", "")


def test_a_403_authorino_did_not_count_fails_the_witness(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway(["auth-uncounted:golduser"])
    run = bad_keys_run(stack, tmp_path / "runs")
    state, message = outcome(run, tmp_path)
    assert (state, re.sub(r"\d\d:\d\d:\d\d\.\d{3}", "T", message.splitlines()[0])) == ("failed", (
        f"AuthConfig {AUTHCONFIG}: 1 of the run's 3 x 403 not counted as PERMISSION_DENIED (an answer that did not "
        "come from Authorino's decision, or a lost increment), between Authorino's scrapes at T (before the run's "
        "first request) and T (after its last answer)"))


def test_without_authorinos_series_the_witness_cannot_decide(policies: list[str], tmp_path: Path) -> None:
    with LocalStack(policies, authorino=False) as bare:
        run = bad_keys_run(bare, tmp_path / "runs")
        assert outcome(run, tmp_path) == ("skipped", (
            f"cannot decide: the run's Prometheus at {bare.prometheus_url} holds no "
            "auth_server_authconfig_response_status series (Authorino's /server-metrics is not scraped there)"))
