"""Every file in examples/ runs, as its README says, against the local stand-in: the scenario file, the own tier
user (with Locust's controls and in a scenario), the own checks (passing and failing), the own policy."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_locust_e2e import client_counts, locust_args, server_counts
from test_plan import DEPLOY, ROOT

from chargeback.record import COMPLETE, RunRecord
from scenarios import UNKNOWN
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXAMPLES = ROOT / "examples"


def run(stack: LocalStack, runs: Path, policy: Path, *extra: str, locustfiles: str = "locustfile.py") -> RunRecord:
    """A headless run with --check on a fresh gateway; exit 0 required; its record, whose ledger must equal the
    gateway's counters."""
    stack.restart_gateway()
    command = locust_args(stack.gateway_url, runs, [policy], "--headless", "--prometheus-url", stack.prometheus_url,
                          "--check", *extra)
    command[command.index("-f") + 1] = ",".join(str(ROOT / f) for f in locustfiles.split(","))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    record = RunRecord.load(runs / "latest")
    assert record.state == COMPLETE and client_counts(record) == server_counts(stack, record)
    return record


def own_checks(record: RunRecord, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", str(EXAMPLES / "my_checks"), "--run", str(record.path),
                           "-q", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_the_scenario_file_and_the_own_checks(stack: LocalStack, tmp_path: Path) -> None:
    record = run(stack, tmp_path, DEPLOY, "--scenario-file", str(EXAMPLES / "scenarios.yaml"),
                 "--scenario", "office-day")
    assert {u: (a.sent, a.authorized, a.limited, a.rejected) for u, a in record.ledger.accounts.items()} == {
        "freeuser1": (7, 2, 5, 0), "freeuser2": (4, 2, 2, 0), "premiumuser1": (3, 3, 0, 0),
        "enterpriseuser1": (3, 3, 0, 0), UNKNOWN: (2, 0, 0, 2)}
    assert record.meta["scenario_description"].startswith("Every tier's first user chats steadily")
    passed = own_checks(record, tmp_path)
    assert passed.returncode == 0 and passed.stdout.strip().splitlines()[-1].startswith("9 passed"), passed.stdout


def test_own_checks_fail_when_their_condition_does_not_hold(stack: LocalStack, tmp_path: Path) -> None:
    record = run(stack, tmp_path, DEPLOY, "--scenario", "seed-demo")  # no enterprise traffic
    failed = own_checks(record, tmp_path)
    assert failed.returncode == 1 and "tiers without traffic: enterprise" in failed.stdout, failed.stdout
    assert failed.stdout.strip().splitlines()[-1].startswith("1 failed, 6 passed"), failed.stdout


def test_the_own_tier_user_replaces_the_generated_one(stack: LocalStack, tmp_path: Path) -> None:
    files = "locustfile.py,examples/own_user.py"
    controls = run(stack, tmp_path / "controls", DEPLOY, "-u", "4", "-r", "4", "-t", "3s", "--tier-weights",
                   "premium=1", locustfiles=files)
    accounts = controls.ledger.accounts
    assert set(accounts) == {"premiumuser1", "premiumuser2"}
    # its chats: 2 prompt and 8 completion tokens each (the generated user's requests would have 21)
    assert all(a.total_tokens == 10 * a.authorized and a.authorized == 10 for a in accounts.values()), accounts
    scenario = run(stack, tmp_path / "scenario", DEPLOY, "--scenario", "seed-demo", locustfiles=files)
    assert {u: (a.sent, a.total_tokens) for u, a in scenario.ledger.accounts.items()} == {
        "premiumuser1": (8, 80), "premiumuser2": (6, 60), "freeuser1": (5, 2 * 12)}  # the scenario's budgets


def test_the_own_policy_with_other_tiers_runs_the_built_in_scenarios(tmp_path: Path) -> None:
    policy = EXAMPLES / "policy"
    with LocalStack([str(policy)]) as other:
        seed = run(other, tmp_path / "seed", policy, "--scenario", "seed-demo")
        chat = run(other, tmp_path / "chat", policy, "--scenario", "chat-stream")
    assert {u: (a.authorized, a.limited) for u, a in seed.ledger.accounts.items()} == {
        "carol": (6, 2), "erin": (3, 2), "dave": (6, 0)}
    assert {u: (a.authorized, a.limited) for u, a in chat.ledger.accounts.items()} == {
        "alice": (4, 0), "carol": (4, 0), "erin": (3, 1)}
    assert seed.plan.currency == "EUR"
