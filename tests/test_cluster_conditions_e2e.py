"""The verdict under the conditions of a real cluster, each staged for real against the stand-in and a real
Prometheus with real Locust runs: earlier traffic (the same run twice, another client with curl), a gateway that
forgets windows, fails open, mislabels the group or drops an increment behind a slow model, a model server's own
429, two limiter replicas both ways, a 30 s scrape and an unrelated slow target, a gateway killed mid-run, URLs that
do not answer, keys that are not the gateway's, and a re-check after newer traffic. Each asserts the verdict the
condition must give."""
from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from test_checks_e2e import CHECKS_PER_SEED_RUN, checks, failures
from test_locust_e2e import locust_args
from test_plan import DEPLOY, ROOT, write

from chargeback.ledger import DECIDED, MODEL_429, NOT_CONNECTED
from chargeback.prometheus import PrometheusSource
from chargeback.record import COMPLETE, INCOMPLETE, RunRecord
from chargeback.report import from_run
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SEED_LEDGER = {"premiumuser1": (8, 0), "freeuser1": (2, 3), "premiumuser2": (6, 0)}


def run(stack: LocalStack, runs: Path, *extra: str, scenario: str = "seed-demo", code: int = 0,
        policies: list[Path] | None = None) -> Path:
    """One headless Locust run against `stack` with its Prometheus, exiting with `code`; the record's folder."""
    args = locust_args(stack.gateway_url, runs, policies or [DEPLOY], "--headless", "--scenario", scenario,
                       "--prometheus-url", stack.prometheus_url, *extra)
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == code, result.stderr[-3000:]
    return (runs / "latest").resolve()


def ledger(run_path: Path) -> dict[str, tuple[int, int]]:
    return {u: (a.authorized, a.limited) for u, a in RunRecord.load(run_path).ledger.accounts.items()}


def curl(stack: LocalStack, key: str) -> int:
    """One completion by another client on the same key, with curl: its HTTP status."""
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                          "-H", f"Authorization: APIKEY {key}", "-H", "Content-Type: application/json",
                          "-d", '{"model": "Qwen/Qwen3-0.6B", "prompt": "hi", "max_tokens": 4}',
                          f"{stack.gateway_url}/v1/completions"], capture_output=True, text=True, timeout=30)
    return int(out.stdout)


def passed(run_path: Path, tmp_path: Path, *extra: str) -> str:
    code, outcomes, output = checks(run_path, tmp_path, *extra)
    assert (code, failures(outcomes), len(outcomes)) == (0, {}, CHECKS_PER_SEED_RUN), output[-3000:]
    return output


def test_the_same_run_twice_inside_one_window_passes_twice(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway()
    first = run(stack, tmp_path / "1")
    second = run(stack, tmp_path / "2")
    third = run(stack, tmp_path / "3", "--limitador-url", stack.gateway_url)
    assert ledger(first) == SEED_LEDGER
    assert ledger(second) == {"premiumuser1": (2, 6), "freeuser1": (0, 5), "premiumuser2": (4, 2)}  # windows still open
    assert ledger(third) == {"premiumuser1": (0, 8), "freeuser1": (0, 5), "premiumuser2": (0, 6)}
    assert "state before the run: the counters' history in Prometheus before the run" in passed(second, tmp_path)
    assert "state before the run: Limitador's /counters before the run" in passed(third, tmp_path)
    assert RunRecord.load(third).meta["limitador"]["before"]["counters"]  # the raw /counters reading is kept


def test_another_client_on_the_keys_before_the_run(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway()
    assert [curl(stack, "freeuser1_key") for _ in range(2)] == [200, 200]  # the free window is full now
    honest = run(stack, tmp_path / "honest")
    assert ledger(honest)["freeuser1"] == (0, 5)
    passed(honest, tmp_path)
    stack.restart_gateway(["forget-after:2"])  # forgets every window after the other client's two calls
    assert [curl(stack, "freeuser1_key") for _ in range(2)] == [200, 200]
    forgetful = run(stack, tmp_path / "forgetful")
    assert ledger(forgetful)["freeuser1"] == (2, 3)
    code, outcomes, output = checks(forgetful, tmp_path)
    failed = failures(outcomes)
    assert (code, set(failed)) == (1, {"test_policy_limit_held[freeuser1-free-user-requests]",
                                       "test_answers_follow_the_policy[freeuser1]",
                                       "test_counts_match_the_window_model[freeuser1]"}), output[-3000:]
    assert re.search(r"freeuser1: request 1 \(sent [\d:.]+\) got through the limiter, but free-user-requests \(2 per "
                     r"120 s\) was already full in every possible world \(state before the run: the counters' history",
                     failed["test_answers_follow_the_policy[freeuser1]"])


def test_the_state_before_the_run_is_kept_so_a_check_after_prometheus_is_gone_gives_the_same_verdict(
        tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)]) as gone:
        assert [curl(gone, "freeuser1_key") for _ in range(2)] == [200, 200]  # the free window is full now
        honest = run(gone, tmp_path / "honest")
        gone.restart_gateway(["forget-after:2"])
        assert [curl(gone, "freeuser1_key") for _ in range(2)] == [200, 200]
        forgetful = run(gone, tmp_path / "forgetful")
    kept = RunRecord.load(forgetful).meta["prior"]["freeuser1"]
    assert (kept["source"], kept["exact"]) == ("the counters' history in Prometheus before the run", True)
    assert "state before the run: the counters' history in Prometheus before the run" in passed(honest, tmp_path)
    code, outcomes, output = checks(forgetful, tmp_path)
    assert (code, set(failures(outcomes))) == (1, {"test_policy_limit_held[freeuser1-free-user-requests]",
                                                   "test_answers_follow_the_policy[freeuser1]",
                                                   "test_counts_match_the_window_model[freeuser1]"}), output[-3000:]


def test_a_gateway_that_fails_open_fails_the_limit_and_the_count(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway(["fail-open:freeuser1"])
    code, outcomes, output = checks(run(stack, tmp_path), tmp_path)
    failed = failures(outcomes)
    assert (code, set(failed)) == (1, {"test_policy_limit_held[freeuser1-free-user-requests]",
                                       "test_answers_follow_the_policy[freeuser1]",
                                       "test_user_counters_match_the_ledger[freeuser1]",
                                       "test_counts_match_the_window_model[freeuser1]",
                                       "test_group_counters_match_the_ledger[free]"}), output[-3000:]
    assert ("freeuser1: the limit free-user-requests (2 per 120 s) did not hold: the client got 5 answer(s) past the "
            "limiter and the server counted 0 authorized, but over the run's timeline the policy lets at most 2 "
            "through") in failed["test_policy_limit_held[freeuser1-free-user-requests]"]
    assert ("freeuser1: 5 call(s) that reached the limiter were not counted (the gateway failing open, or a dropped "
            "increment)") in failed["test_user_counters_match_the_ledger[freeuser1]"]


def test_a_user_billed_under_another_group_fails_naming_both(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway(["mislabel:premiumuser1=free"])
    record = run(stack, tmp_path)
    code, outcomes, output = checks(record, tmp_path)
    failed = failures(outcomes)
    assert (code, set(failed)) == (1, {"test_user_is_billed_under_the_plans_group[premiumuser1]",
                                       "test_group_counters_match_the_ledger[free]",
                                       "test_group_counters_match_the_ledger[premium]"}), output[-3000:]
    assert "premiumuser1: billed under group free, but the Plan puts the user in premium" in \
        failed["test_user_is_billed_under_the_plans_group[premiumuser1]"]
    report = from_run(str(record), {}, {})
    assert "premiumuser1: BILLED under group free, the Plan says premium" in report.flags
    assert [u.group for u in report.users if u.user == "premiumuser1"] == ["free"]


def test_a_429_of_the_model_server_is_an_authorized_call(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway(["model-429:premiumuser1"])
    record = run(stack, tmp_path, code=1)  # Locust counts the model server's 429 as a failed request
    account = RunRecord.load(record).ledger.accounts["premiumuser1"]
    assert (account.authorized, account.limited, account.errors, int((account.statuses() == MODEL_429).sum())) == (8, 0, 1, 1)
    passed(record, tmp_path)


def test_checking_again_after_newer_traffic_gives_the_same_verdict(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway(["double-count:premiumuser2"])
    args = locust_args(stack.gateway_url, tmp_path / "runs", [DEPLOY], "--headless", "--scenario", "seed-demo")
    assert subprocess.run(args, cwd=ROOT, capture_output=True, timeout=120).returncode == 0  # no snapshots taken
    record = (tmp_path / "runs" / "latest").resolve()
    first = checks(record, tmp_path, "--prometheus-url", stack.prometheus_url)
    run(stack, tmp_path / "newer", scenario="realistic-hours")  # more traffic on the same keys, counters move on
    again = checks(record, tmp_path, "--prometheus-url", stack.prometheus_url)
    assert first[:2] == again[:2] and first[0] == 1
    assert set(failures(again[1])) == {"test_user_counters_match_the_ledger[premiumuser2]",
                                       "test_counts_match_the_window_model[premiumuser2]",
                                       "test_group_counters_match_the_ledger[premium]"}, again[2][-3000:]


def test_a_slow_model_leaves_no_dropped_increment_unseen(tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)], ttft=3.0) as slow:
        honest = run(slow, tmp_path / "honest", scenario="saturation")
        accounts = RunRecord.load(honest).ledger.accounts
        assert not any((a.timeline().outcome == DECIDED).any() for a in accounts.values())  # the stop waited for them
        code, outcomes, output = checks(honest, tmp_path)
        assert (code, failures(outcomes)) == (0, {}), output[-3000:]
        slow.restart_gateway(["drop-authorized:freeuser1"])
        cut = run(slow, tmp_path / "cut", "--stop-timeout", "1", scenario="saturation")
    accounts = RunRecord.load(cut).ledger.accounts
    assert any((a.timeline().outcome == DECIDED).any() for a in accounts.values())  # cut off a second after the end
    code, outcomes, output = checks(cut, tmp_path)
    failed = failures(outcomes)
    assert code == 1 and "Failed: freeuser1: 1 call(s) that reached the limiter were not counted" in \
        failed["test_user_counters_match_the_ledger[freeuser1]"], output[-3000:]
    assert not [name for name in failed if "freeuser1" not in name and "[free]" not in name], output[-3000:]


@pytest.mark.parametrize("storage", ["shared", "separate"])
def test_two_limiter_replicas_with_shared_or_separate_windows(storage: str, tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)], replicas=2, replica_storage=storage) as replicated:
        record = run(replicated, tmp_path, scenario="saturation")
        code, outcomes, output = checks(record, tmp_path)
    after = RunRecord.load(record).snapshots["after"].series["authorized_calls_with_user_and_group"]
    assert len({labels["instance"] for labels, _ in after}) == 2  # each replica its own target
    failed = failures(outcomes)
    users = ["enterpriseuser1", "freeuser1", "freeuser2", "premiumuser1", "premiumuser2"]
    if storage == "shared":
        assert (code, failed) == (0, {}), output[-3000:]
        return
    held = {f"test_policy_limit_held[{u}-{t}-user-requests]" for u, t in zip(users, [
        "enterprise", "free", "free", "premium", "premium"])}
    assert code == 1 and held <= set(failed), output[-3000:]  # each user got its limit twice, once per replica
    assert not [name for name in failed if "reconciliation" in name or "counters_match_the_ledger" in name]
    assert "freeuser1: the limit free-user-requests (2 per 120 s) did not hold: the client got 4 answer(s)" in \
        failed["test_policy_limit_held[freeuser1-free-user-requests]"]


def first_scrape_after(stack: LocalStack, moment: float) -> float:
    """When Prometheus first scraped the gateway (job limitador) after `moment`, from its own `up` samples."""
    source = PrometheusSource(stack.prometheus_url, job="limitador")
    return min(t for t, _ in source.target_scrapes(moment, time.time())[source.targets()[0]])


@pytest.mark.parametrize("interval, other", [("30s", None), ("1s", "30s")])
def test_a_slow_scrape_or_another_slow_target_still_completes_the_run(interval: str, other: str | None,
                                                                      tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)], scrape_interval=interval, other_target_interval=other) as slow:
        record_path = run(slow, tmp_path)
        record = RunRecord.load(record_path)
        assert (record.state, record.meta["targets"]) == (COMPLETE, [
            {"job": "limitador", "instance": slow.gateway_url.removeprefix("http://"),
             "interval": float(interval.removesuffix("s")), "timeout": 10.0 if interval == "30s" else 1.0}])
        # the snapshot after the run is the gateway's own first scrape after the last answer, whatever else is scraped
        assert record.snapshots["after"].at == pytest.approx(first_scrape_after(slow, record.ledger.last_answer()),
                                                             abs=0.002)
        passed(record_path, tmp_path)


def killed_mid_run(stack: LocalStack, runs: Path, kill: Callable[[], None]) -> tuple[RunRecord, int, str]:
    """realistic-hours (63 requests over ~25 s) with `kill` done 3 s into it: the record, Locust's exit code and
    standard error."""
    args = locust_args(stack.gateway_url, runs, [DEPLOY], "--headless", "--scenario", "realistic-hours",
                       "--prometheus-url", stack.prometheus_url)
    locust = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(200):  # bounded: until the run has started sending
        if (runs / "latest" / "record.json").exists():
            break
        time.sleep(0.1)
    time.sleep(3)
    kill()
    _, err = locust.communicate(timeout=180)
    return RunRecord.load((runs / "latest").resolve()), locust.returncode, err


def test_a_gateway_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)]) as dying:
        record, exit_code, err = killed_mid_run(dying, tmp_path / "runs", dying.kill_gateway)
        code, outcomes, output = checks(record.path, tmp_path, "--partial")
    assert exit_code == 3, err[-3000:]
    assert f"error: run {record.path} is incomplete: no snapshot of the counters after the run: Prometheus at " \
           f"{dying.prometheus_url}: the gateway's target" in err
    assert record.state == INCOMPLETE and "was down at its first scrape after the moment that mattered" in \
        record.meta["reason"]
    accounts = record.ledger.accounts
    assert sum(a.sent for a in accounts.values()) == 3 * 15 + 2 * 9  # every request of every budget is in the ledger
    refused = sum(int((a.statuses() == NOT_CONNECTED).sum()) for a in accounts.values())
    assert 0 < refused < 63
    assert "chargeback: PARTIAL: the run is incomplete" in output
    assert (code, failures(outcomes)) == (0, {}), output[-3000:]
    assert {n for n, m in outcomes.items() if n.startswith("test_counts_match_the_window_model")} == {
        f"test_counts_match_the_window_model[{u}]"
        for u in ("freeuser1", "freeuser2", "premiumuser1", "premiumuser2", "enterpriseuser1")}


def test_prometheus_killed_mid_run_loses_nothing(tmp_path: Path) -> None:
    with LocalStack([str(DEPLOY)]) as blind:
        assert blind.prometheus.process is not None
        record, exit_code, err = killed_mid_run(blind, tmp_path / "runs", blind.prometheus.process.kill)
    assert exit_code == 3, err[-3000:]
    assert record.state == INCOMPLETE and re.fullmatch(
        rf"no snapshot of the counters after the run: Prometheus at {blind.prometheus_url}: cannot query "
        r"'up\{job=\"limitador\"\}\[\d+ms\]': ConnectionError", record.meta["reason"]), record.meta["reason"]
    accounts = record.ledger.accounts
    assert sum(a.sent for a in accounts.values()) == 3 * 15 + 2 * 9
    assert {u: (a.authorized, a.limited) for u, a in accounts.items()} == {
        "premiumuser1": (10, 5), "premiumuser2": (10, 5), "enterpriseuser1": (15, 0), "freeuser1": (2, 7),
        "freeuser2": (2, 7)}
    assert "before" in record.snapshots and "after" not in record.snapshots


def test_urls_that_do_not_answer_stop_the_run_before_any_request(stack: LocalStack, tmp_path: Path) -> None:
    def refused(gateway: str, *extra: str) -> str:
        args = locust_args(gateway, tmp_path / "runs", [DEPLOY], "--headless", "--scenario", "seed-demo", *extra)
        result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and not (tmp_path / "runs" / "latest").exists(), result.stderr[-2000:]
        return result.stderr.strip().splitlines()[-1]

    assert refused("http://127.0.0.1:9") == ("error: the gateway at http://127.0.0.1:9 does not answer: "
                                             "ConnectionError; no request was sent")
    assert refused(stack.gateway_url, "--prometheus-url", "http://127.0.0.1:9") == (
        "error: Prometheus at http://127.0.0.1:9: cannot read /api/v1/targets: ConnectionError; no request was sent")
    assert refused(stack.gateway_url, "--prometheus-url", stack.prometheus_url, "--job", "nope") == (
        f"error: Prometheus at {stack.prometheus_url}: no active target of job 'nope' (jobs: authorino, limitador); "
        "no request was sent")
    assert refused(stack.gateway_url, "--limitador-url", "http://127.0.0.1:9") == (
        "error: Limitador at http://127.0.0.1:9/status: cannot read: ConnectionError; no request was sent")


def test_keys_that_are_not_the_gateways_fail_with_the_cause(stack: LocalStack, tmp_path: Path) -> None:
    stack.restart_gateway()
    keys = re.sub(r"(api_key: \w+)_key", r"\1_otherkey", (DEPLOY / "api-keys.yaml").read_text())
    other = tmp_path / "manifests"
    other.mkdir()
    write(other, "api-keys.yaml", keys)
    for name in ("auth-policy.yaml", "rate-limit-policy.yaml", "prices.yaml"):
        write(other, name, (DEPLOY / name).read_text())
    record = run(stack, tmp_path / "runs", code=1, policies=[other])
    code, outcomes, output = checks(record, tmp_path)
    assert (code, set(failures(outcomes))) == (1, {"test_valid_keys_reached_the_limiter"}), output[-3000:]
    assert (f"Failed: every request of freeuser1, premiumuser1, premiumuser2 got 401: the keys in the manifests "
            f"({other}) are not the gateway's") == failures(outcomes)["test_valid_keys_reached_the_limiter"]
