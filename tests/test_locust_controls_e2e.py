"""Locust's own controls drive the tier users: -u/-r/-t with tier weights and a pattern, a user's LoadTestShape,
several processes, a user class that is no TierUser; scaled scenarios; bad options get one line."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_locust_e2e import client_counts, locust_args, run_locust, server_counts
from test_plan import DEPLOY, ROOT, write

from chargeback.record import COMPLETE, RunRecord
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def senders(record: RunRecord) -> dict[str, int]:
    """identity -> how many simulated users sent as it."""
    return {user: len({entry[3] for entry in account.entries()}) for user, account in record.ledger.accounts.items()}


def controls_run(stack: LocalStack, runs: Path, *extra: str) -> RunRecord:
    stack.restart_gateway()
    return run_locust(stack.gateway_url, runs, [DEPLOY], "--prometheus-url", stack.prometheus_url, "--check", *extra)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_users_spawn_rate_and_run_time_drive_the_tiers_by_weight_round_robin(stack: LocalStack, tmp_path: Path,
                                                                            processes: str) -> None:
    extra = ("--processes", processes) if processes == "2" else ()
    record = controls_run(stack, tmp_path, "-u", "6", "-r", "6", "-t", "4s", "--tier-weights", "premium=2,free=1",
                          "--pattern", "steady:4/s", *extra)
    assert (record.state, record.meta["scenario"], record.meta["simulated_users"]) == (COMPLETE, "locust", 6)
    assert record.meta["scenario_description"] == ("Locust's controls: 6 users at 6/s, 4 s; tier weights "
                                                   "premium=2,free=1; pattern steady:4/s")
    assert senders(record) == {"premiumuser1": 2, "premiumuser2": 2, "freeuser1": 1, "freeuser2": 1}
    accounts = record.ledger.accounts
    assert all(a.sent > 12 for a in accounts.values()), {u: a.sent for u, a in accounts.items()}  # 4/s for 4 s
    assert {u: (a.authorized, a.limited) for u, a in accounts.items()} == {
        u: (limit, accounts[u].sent - limit) for u, limit in (
            ("premiumuser1", 10), ("premiumuser2", 10), ("freeuser1", 2), ("freeuser2", 2))}
    assert client_counts(record) == server_counts(stack, record)


def test_a_users_load_test_shape_drives_the_tier_users(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway()
    command = locust_args(stack.gateway_url, tmp_path, [DEPLOY], "--headless", "--prometheus-url",
                          stack.prometheus_url, "--check", "--pattern", "steady:2/s")
    command[command.index("-f") + 1] = str(ROOT / "tests" / "locust_shape.py")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    record = RunRecord.load(tmp_path / "latest")
    assert (record.state, record.meta["simulated_users"], record.meta["scenario_description"]) == (
        COMPLETE, 4, "Locust's controls: the LoadTestShape TwoSteps; tier weights equal; pattern steady:2/s")
    counts = senders(record)
    assert sum(counts.values()) == 4, counts  # both steps ran
    for tier in ("free", "premium"):  # each tier's simulated users took its identities round-robin
        assert counts.get(f"{tier}user1", 0) - counts.get(f"{tier}user2", 0) in (0, 1), counts
    assert client_counts(record) == server_counts(stack, record)


def test_a_user_class_that_sets_the_request_context_is_accounted(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway()
    command = locust_args(stack.gateway_url, tmp_path, [DEPLOY], "--headless", "-u", "1", "-t", "2s",
                          "--prometheus-url", stack.prometheus_url, "--check")
    command[command.index("-f") + 1] = str(ROOT / "tests" / "locust_plain_user.py")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-3000:]  # Locust counts the gateway's 429s as failures
    record = RunRecord.load(tmp_path / "latest")
    account = record.ledger.accounts["freeuser1"]
    assert (record.state, list(record.ledger.accounts), account.authorized, account.limited) == (
        COMPLETE, ["freeuser1"], 2, account.sent - 2)
    assert account.sent >= 5 and account.total_tokens > 0
    assert client_counts(record) == server_counts(stack, record)


def test_scenarios_scale_with_duration_and_users_per_identity(stack: LocalStack, tmp_path: Path) -> None:
    record = controls_run(stack, tmp_path, "--scenario", "saturation", "--duration", "2s",
                          "--users-per-identity", "1")
    assert (record.state, record.meta["simulated_users"]) == (COMPLETE, 5)
    assert senders(record) == dict.fromkeys(
        ["freeuser1", "freeuser2", "premiumuser1", "premiumuser2", "enterpriseuser1"], 1)
    assert client_counts(record) == server_counts(stack, record)


@pytest.mark.parametrize("extra, code, line", [
    (["--pattern", "fast"], 2,
     "error: --pattern: 'fast' is not a pattern (steady:N/s | bursty:NxDURATION | poisson:N/s | none)"),
    (["--tier-weights", "gold=1"], 2,
     "error: --tier-weights: 'gold' is not a tier of the Plan; tiers: free, premium, enterprise"),
    (["--scenario", "nope"], 2,
     "error: unknown scenario 'nope': choose one of seed-demo, realistic-hours, saturation, bad-keys, chat-stream, soak"),
    (["--scenario", "saturation", "--duration", "soon"], 2,
     "error: --duration: 'soon' is not a duration like 30s, 2m or 1h"),
    (["--scenario-file", "{tmp}/bad.yaml"], 1,
     "error: {tmp}/bad.yaml: scenarios[0].streams[0].pattern: 'often' is not a pattern "
     "(steady:N/s | bursty:NxDURATION | poisson:N/s | none)"),
])
def test_bad_options_stop_locust_with_one_line(tmp_path: Path, extra: list[str], code: int, line: str) -> None:
    write(tmp_path, "bad.yaml", "scenarios: [{name: b, streams: [{tiers: [free], requests: 1, pattern: often}]}]")
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    result = subprocess.run(locust_args("http://127.0.0.1:1", tmp_path / "runs", [DEPLOY], "--headless", *extra),
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (code, line.format(tmp=tmp_path))
    assert not (tmp_path / "runs").exists()
