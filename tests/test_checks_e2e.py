"""The checks against the stand-in with a real Prometheus and real Locust runs: a clean run passes (5 times in a
row); each injected fault makes the right check fail, naming the user; clear errors when data is missing."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from test_locust_e2e import locust_args
from test_plan import DEPLOY, ROOT, limit_policy, write

from chargeback.ledger import Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.summary import PlanSummary
from chargeback.verify import gather
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHECKS_PER_SEED_RUN = 26  # 3 users x (reconciliation, group on the bill, answers, expected table, limit) + 2 groups
#                           + 3 auth + 2 evidence + the token check, skipped: no token limit applies
#                           + 3 users x the rate-limit headers, skipped: the stand-in serves none by default


def locust_run(stack: LocalStack, runs: Path, scenario: str = "seed-demo", faults: list[str] | None = None,
               prometheus: bool = True) -> Path:
    """A fresh gateway (counters from zero) with `faults`, one headless run; the record's folder."""
    stack.restart_gateway(faults)
    extra = ("--prometheus-url", stack.prometheus_url) if prometheus else ()
    policies = [Path(p) for p in stack.policies]
    result = subprocess.run(locust_args(stack.gateway_url, runs, policies, "--headless", "--scenario", scenario,
                                        *extra), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return (runs / "latest").resolve()


def checks(run: Path, tmp_path: Path, *extra: str) -> tuple[int, dict[str, str | None], str]:
    """Run the built-in checks as a user would, `pytest --run RUN` in a folder of their own (the installed plugin
    finds them); exit code, test name -> failure message (None: passed), output."""
    junit = tmp_path / "checks.xml"
    result = subprocess.run([sys.executable, "-m", "pytest", "--run", str(run), "-p", "no:cacheprovider",
                             f"--junitxml={junit}", *extra],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    outcomes: dict[str, str | None] = {}
    if junit.exists():
        for case in ElementTree.parse(junit).iter("testcase"):
            failed = case.find("failure")
            outcomes[case.get("name")] = None if failed is None else failed.get("message", "")
    return result.returncode, outcomes, result.stdout + result.stderr


def failures(outcomes: dict[str, str | None]) -> dict[str, str]:
    return {name: message for name, message in outcomes.items() if message is not None}


def test_clean_seed_demo_passes_five_times_in_a_row(stack: LocalStack, tmp_path: Path) -> None:
    for attempt in range(5):
        run = locust_run(stack, tmp_path / f"runs{attempt}")
        code, outcomes, output = checks(run, tmp_path)
        assert (code, failures(outcomes), len(outcomes)) == (0, {}, CHECKS_PER_SEED_RUN), output[-3000:]


def test_a_users_own_checks_use_the_plugins_fixtures_and_its_options_need_no_run(stack: LocalStack,
                                                                                  tmp_path: Path) -> None:
    run = locust_run(stack, tmp_path / "runs")
    mine = tmp_path / "my_checks"
    mine.mkdir()
    (mine / "test_mine.py").write_text(textwrap.dedent("""
        from chargeback.verify import UserCheck, Verification

        def test_no_premium_user_was_limited(plan_user_case: UserCheck) -> None:
            assert plan_user_case.tier != "premium" or plan_user_case.server_limited == 0

        def test_the_free_user_was_limited(verification: Verification) -> None:
            assert verification.users["freeuser1"].server_limited == 3
    """))
    code, outcomes, output = checks(run, tmp_path, str(mine))
    assert (code, outcomes) == (0, {"test_no_premium_user_was_limited[freeuser1]": None,
                                    "test_no_premium_user_was_limited[premiumuser1]": None,
                                    "test_no_premium_user_was_limited[premiumuser2]": None,
                                    "test_the_free_user_was_limited": None}), output[-3000:]

    def pytest_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=folder,
                              capture_output=True, text=True, timeout=120)

    helped = pytest_in(tmp_path, str(ROOT / "checks"), "--help")
    assert helped.returncode == 0 and "--run=DIR" in helped.stdout and "--limiter-timeout=SECONDS" in helped.stdout
    without_run = pytest_in(tmp_path, str(mine))
    assert without_run.returncode == 4 and "ERROR: the checks need --run runs/<run-id> (or runs/latest)" in (
        without_run.stderr), without_run.stdout + without_run.stderr


def test_a_request_let_over_the_limit_fails_the_limit_checks(stack: LocalStack, tmp_path: Path) -> None:
    code, outcomes, output = checks(locust_run(stack, tmp_path, faults=["over-limit:freeuser1"]), tmp_path)
    failed = failures(outcomes)
    assert code == 1 and set(failed) == {
        "test_policy_limit_held[freeuser1-free-user-requests]",
        "test_answers_follow_the_policy[freeuser1]",
        "test_counts_match_the_window_model[freeuser1]",
    }, output[-3000:]
    assert ("freeuser1: the limit free-user-requests (2 per 120 s) did not hold: the client got 3 answer(s) past the "
            "limiter and the server counted 3 authorized, but over the run's timeline the policy lets at most 2 "
            "through (1 window(s))") in failed["test_policy_limit_held[freeuser1-free-user-requests]"]
    assert re.search(r"freeuser1: request 3 \(sent [\d:.]+\) got through the limiter, but free-user-requests \(2 per "
                     r"120 s\) was already full in every possible world",
                     failed["test_answers_follow_the_policy[freeuser1]"])


def test_a_dropped_increment_fails_reconciliation_with_a_table(stack: LocalStack, tmp_path: Path) -> None:
    code, outcomes, output = checks(locust_run(stack, tmp_path, faults=["drop-authorized:premiumuser1"]), tmp_path)
    failed = failures(outcomes)
    assert code == 1 and "test_user_counters_match_the_ledger[premiumuser1]" in failed, output[-3000:]
    assert "test_user_counters_match_the_ledger[premiumuser2]" not in failed
    message = failed["test_user_counters_match_the_ledger[premiumuser1]"]
    assert message.startswith("Failed: premiumuser1: 1 call(s) that reached the limiter were not counted (the gateway failing "
                              "open, or a dropped increment)")
    table = [line.split() for line in message.splitlines()[1:]]
    assert table[:3] == [["user", "group", "counter", "client", "server", "expected", "difference"],
                         ["premiumuser1", "premium", "authorized", "8", "7", "8", "-1"],
                         ["premiumuser1", "premium", "limited", "0", "0", "0", "0"]]
    assert set(failed) == {"test_user_counters_match_the_ledger[premiumuser1]",
                           "test_group_counters_match_the_ledger[premium]",
                           "test_counts_match_the_window_model[premiumuser1]"}


def test_a_double_count_fails_reconciliation(stack: LocalStack, tmp_path: Path) -> None:
    code, outcomes, output = checks(locust_run(stack, tmp_path, faults=["double-count:premiumuser2"]), tmp_path)
    failed = failures(outcomes)
    message = failed["test_user_counters_match_the_ledger[premiumuser2]"]
    assert code == 1 and "premiumuser2  premium  authorized  6       7       6         1" in message, output[-3000:]
    assert re.match(r"Failed: premiumuser2: the server counted 1 call\(s\) the run did not send, between [\d:.]+ and [\d:.]+: "
                    "another client using this key, or the gateway counting calls twice", message), message
    assert not any("freeuser1" in name or "premiumuser1" in name for name in failed)


def test_a_missing_group_label_passes_through_the_plans_groups(stack: LocalStack, tmp_path: Path) -> None:
    run = locust_run(stack, tmp_path, faults=["no-group"])
    code, outcomes, output = checks(run, tmp_path)
    assert (code, failures(outcomes), len(outcomes)) == (0, {}, CHECKS_PER_SEED_RUN), output[-3000:]
    v = gather(run)
    assert v.group_fallback == ["freeuser1", "premiumuser1", "premiumuser2"]
    assert all("group" not in labels for labels, _ in v.after.series["authorized_calls_with_user_and_group"])


def test_a_counter_reset_mid_run_is_reported_as_a_reset(stack: LocalStack, tmp_path: Path) -> None:
    run = locust_run(stack, tmp_path, scenario="realistic-hours", faults=["reset-after:16"])  # after round one
    code, outcomes, output = checks(run, tmp_path)
    failed = failures(outcomes)
    for user in ("premiumuser1", "premiumuser2", "freeuser1", "freeuser2"):
        message = failed[f"test_user_counters_match_the_ledger[{user}]"]
        assert re.match(rf"Failed: {user}: [12] counter\(s\) reset between the snapshots; the server's count cannot "
                        "be compared", message), message
    assert code == 1, output[-3000:]


def test_prometheus_given_only_to_the_checks_reads_history(stack: LocalStack, tmp_path: Path) -> None:
    run = locust_run(stack, tmp_path, prometheus=False)
    assert not (run / "snapshots.json").exists()
    code, outcomes, output = checks(run, tmp_path, "--prometheus-url", stack.prometheus_url)
    assert (code, failures(outcomes), len(outcomes)) == (0, {}, CHECKS_PER_SEED_RUN), output[-3000:]
    code, _, output = checks(run, tmp_path, "--metrics-url", f"{stack.gateway_url}/metrics")
    assert code == 4 and f"ERROR: {stack.gateway_url}/metrics: a /metrics endpoint has no history" in output


def test_the_gateways_metrics_url_is_a_source_without_prometheus(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway()
    metrics = f"{stack.gateway_url}/metrics"
    result = subprocess.run(locust_args(stack.gateway_url, tmp_path, [DEPLOY], "--headless", "--scenario", "seed-demo",
                                        "--metrics-url", metrics),
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    code, outcomes, output = checks(tmp_path / "latest", tmp_path)
    assert (code, failures(outcomes), len(outcomes)) == (0, {}, CHECKS_PER_SEED_RUN), output[-3000:]


def test_streamed_chat_completions_are_accounted_from_the_last_sse_frame(stack: LocalStack, tmp_path: Path) -> None:
    run = locust_run(stack, tmp_path, scenario="chat-stream")
    code, outcomes, output = checks(run, tmp_path)
    assert (code, failures(outcomes)) == (0, {}), output[-3000:]
    accounts = RunRecord.load(run).ledger.accounts
    assert {u: (a.authorized, a.limited, a.prompt_tokens, a.total_tokens) for u, a in accounts.items()} == {
        "freeuser1": (2, 2, 10, 58), "premiumuser1": (4, 0, 20, 116), "enterpriseuser1": (4, 0, 20, 116)}


def test_duplicate_series_from_two_scrape_jobs_are_counted_once(tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)], extra_jobs=["limitador-copy"]) as twice:
        run = locust_run(twice, tmp_path)
        code, outcomes, output = checks(run, tmp_path)
    assert (code, failures(outcomes), len(outcomes)) == (0, {}, CHECKS_PER_SEED_RUN), output[-3000:]
    after = RunRecord.load(run).snapshots["after"].series["authorized_calls_with_user_and_group"]
    assert sorted((labels["user"], labels["job"], value) for labels, value in after) == [
        ("freeuser1", "limitador", 2), ("freeuser1", "limitador-copy", 2),
        ("premiumuser1", "limitador", 8), ("premiumuser1", "limitador-copy", 8),
        ("premiumuser2", "limitador", 6), ("premiumuser2", "limitador-copy", 6)]


def test_token_hits_are_reconciled_and_a_dropped_report_fails(tmp_path: Path) -> None:
    limits = tmp_path / "limits"
    limits.mkdir()
    write(limits, "tokens.yaml", limit_policy("premium-tokens", "[{limit: 50, window: 1m}]",
                                              'auth.identity.groups.split(",").exists(g, g == "premium")',
                                              kind="TokenRateLimitPolicy"))
    with LocalStack([str(DEPLOY), str(limits)], schema="fork") as tokens:
        clean = checks(locust_run(tokens, tmp_path / "clean"), tmp_path)
        faulty = checks(locust_run(tokens, tmp_path / "faulty", faults=["drop-tokens:premiumuser2"]), tmp_path)
    # 50 tokens a minute: premiumuser1 (22 a request) and premiumuser2 (17) are limited after 3 requests each; the
    # window model bounds, not follows, token limits, so an honest gateway passes
    code, outcomes, output = clean
    assert (code, set(failures(outcomes))) == (0, set()), output[-3000:]
    assert {n for n, m in outcomes.items() if n.startswith("test_token")} == {
        "test_token_counters_match_the_ledger[premiumuser1]", "test_token_counters_match_the_ledger[premiumuser2]"}
    code, outcomes, output = faulty
    assert set(failures(outcomes)) == {"test_token_counters_match_the_ledger[premiumuser2]"}, output
    assert "premiumuser2  premium  total tokens  51      34      -         -17" in failures(outcomes)[
        "test_token_counters_match_the_ledger[premiumuser2]"]


def test_unusable_inputs_fail_with_one_line(tmp_path: Path) -> None:
    code, _, output = checks(tmp_path / "nothing", tmp_path)
    assert code == 4 and f"ERROR: {tmp_path}/nothing/record.json: no such file (not a run record folder?)" in output
    record = RunRecord.start(tmp_path / "runs", {"scenario": "seed-demo"}, PlanSummary.of(load_plan([DEPLOY])))
    record.finish(Ledger(), complete=False, reason="stopped before the scenario finished: 1 of 3 simulated users done")
    code, _, output = checks(record.path, tmp_path)
    assert code == 4 and (f"ERROR: {record.path}: the run is incomplete (stopped before the scenario finished: 1 of 3 "
                          "simulated users done); an unfinished run can be reconciled for what it holds with --partial")\
        in output
    record.finish(Ledger(), complete=True)
    code, _, output = checks(record.path, tmp_path, "--prometheus-url", "http://127.0.0.1:9")
    assert code == 4 and "ERROR: Prometheus at http://127.0.0.1:9: cannot query" in output
    code, _, output = checks(record.path, tmp_path)
    assert code == 4 and "the record holds no metrics snapshots; pass --prometheus-url" in output
