"""Limitador's check-then-update race, staged for real with `--overshoot`: four Locust users on one identity overshoot
its limit; the checks pass saying by how much and why, fail with --strict-limits (pytest's, or the run's) naming the
user, and a sequential request over the limit (the fault over-limit) still fails."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_locust_e2e import locust_args
from test_plan import DEPLOY, ROOT

from chargeback.verify import gather
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT = "free-user-requests (2 per 120 s)"
BURST = """\
scenarios:
  - name: shared-burst
    description: four simulated users on the first identity of the lowest-limit tier, two requests each
    streams:
      - {tiers: [lowest-limit], pick: [0], per_identity: 4, pattern: none, requests: 2}
"""


@pytest.fixture(scope="module")
def stack() -> LocalStack:
    with LocalStack([str(DEPLOY)], overshoot=0.2) as running:
        yield running


def run(stack: LocalStack, runs: Path, *extra: str, faults: list[str] | None = None) -> Path:
    """A fresh gateway (no window open) with `faults`; one headless Locust run; the record's folder."""
    stack.restart_gateway(faults)
    scenarios = runs.parent / "burst.yaml"
    scenarios.write_text(BURST)
    result = subprocess.run(locust_args(stack.gateway_url, runs, [DEPLOY], "--headless", "--scenario-file",
                                        str(scenarios), "--prometheus-url", stack.prometheus_url, *extra),
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return (runs / "latest").resolve()


def checks(run: Path, cwd: Path, *extra: str) -> tuple[int, str]:
    result = subprocess.run([sys.executable, "-m", "pytest", "--run", str(run), "-p", "no:cacheprovider", "-q",
                             "-W", "always::chargeback.pytest_plugin.PassedWith", *extra],
                            cwd=cwd, capture_output=True, text=True, timeout=120)
    return result.returncode, result.stdout


def test_an_overshoot_the_requests_in_flight_explain_passes_saying_so(stack: LocalStack, tmp_path: Path) -> None:
    record = run(stack, tmp_path / "runs", "--scenario", "shared-burst")
    user = gather(record).users["freeuser1"]
    over = user.server_authorized - 2  # read from the gateway's counters in Prometheus
    assert over >= 1 and user.server_authorized == user.client.authorized
    assert (user.client.sent, user.server_limited) == (8, 8 - user.server_authorized)
    code, output = checks(record, tmp_path)
    assert code == 0, output[-3000:]
    at_once = user.in_flight
    assert f"PassedWith: freeuser1: {over} over {LIMIT}, within {at_once} requests in flight at once " \
           "(Limitador's check-then-update race)" in output
    assert f"PassedWith: freeuser1: {over} authorized over the window model's 2, the overshoot of requests in " \
           "flight together (Limitador's check-then-update race)" in output
    assert [(o.over, o.limits) for o in user.overshoots] == [(over, (LIMIT,))]

    code, output = checks(record, tmp_path, "--strict-limits")
    assert code == 1 and (f"freeuser1: the limit {LIMIT} did not hold: the client got {2 + over} answer(s) past the "
                          f"limiter and the server counted {2 + over} authorized, but over the run's timeline the "
                          f"policy lets at most 2 through (1 window(s)) ({at_once} requests in flight at once), "
                          "which --strict-limits fails") in output, output[-3000:]
    assert "3 failed" in output


def test_a_run_started_with_strict_limits_fails_on_its_overshoot(stack: LocalStack, tmp_path: Path) -> None:
    record = run(stack, tmp_path / "runs", "--scenario", "shared-burst", "--strict-limits")
    user = gather(record).users["freeuser1"]
    assert user.server_authorized > 2
    code, output = checks(record, tmp_path)
    assert code == 1 and "3 failed" in output and "which --strict-limits fails" in output, output[-3000:]


def test_a_sequential_request_over_the_limit_still_fails(stack: LocalStack, tmp_path: Path) -> None:
    record = run(stack, tmp_path / "runs", "--scenario", "seed-demo", faults=["over-limit:freeuser1"])
    user = gather(record).users["freeuser1"]
    assert (user.in_flight, user.server_authorized, user.overshoots) == (1, 3, ())
    code, output = checks(record, tmp_path)
    assert code == 1 and (f"freeuser1: the limit {LIMIT} did not hold: the client got 3 answer(s) past the limiter "
                          "and the server counted 3 authorized, but over the run's timeline the policy lets at most 2 "
                          "through (1 window(s))\n") in output, output[-3000:]
    assert "PassedWith" not in output
