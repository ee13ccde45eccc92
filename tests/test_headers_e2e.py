"""The rate-limit headers witness against the stand-in started with --rate-limit-headers, a real Prometheus and real
Locust runs: an honest gateway passes under earlier traffic, concurrent users in two worker processes and a slow
model; a Remaining not decremented, a window forgotten early and a limit other than the policy's each fail it,
naming the user."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_checks_e2e import checks, failures
from test_cluster_conditions_e2e import curl, run
from test_overshoot_e2e import BURST
from test_plan import DEPLOY

from chargeback.headers import header_answers
from chargeback.record import RunRecord
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = ["enterpriseuser1-enterprise", "freeuser1-free", "freeuser2-free", "premiumuser1-premium",
         "premiumuser2-premium"]
CLOCK = r"\d\d:\d\d:\d\d\.\d{3}"


@pytest.fixture(scope="module")
def headed() -> Iterator[LocalStack]:
    """The stand-in serving Limitador's rate-limit headers, its model slow to answer (0.3 s to the first token)."""
    with LocalStack([str(DEPLOY)], ttft=0.3, rate_limit_headers=True) as running:
        yield running


def witness_outcomes(tmp_path: Path) -> dict[str, str]:
    """The witness check's cases in the last `checks(..., tmp_path)`: passed, skipped or failed."""
    found = {}
    for case in ElementTree.parse(tmp_path / "checks.xml").iter("testcase"):
        if case.get("name", "").startswith("test_rate_limit_headers_agree"):
            states = [child.tag for child in case if child.tag in ("failure", "skipped", "error")]
            found[case.get("name")] = states[0] if states else "passed"
    return found


def test_an_honest_gateway_passes_with_earlier_traffic_concurrent_users_and_two_workers(headed: LocalStack,
                                                                                      tmp_path: Path) -> None:
    headed.restart_gateway()
    assert [curl(headed, "freeuser1_key") for _ in range(2)] == [200, 200]  # the free window is full before the run
    record = run(headed, tmp_path, "--processes", "2", scenario="saturation")
    code, outcomes, output = checks(record, tmp_path)
    assert (code, failures(outcomes)) == (0, {}), output[-3000:]
    assert witness_outcomes(tmp_path) == {f"test_rate_limit_headers_agree[{u}-user-requests]": "passed" for u in USERS}
    ledger = RunRecord.load(record).ledger
    free = header_answers(ledger.accounts["freeuser1"])
    assert free is not None and len(free.position) == ledger.accounts["freeuser1"].sent - ledger.accounts[
        "freeuser1"].unanswered  # every answer carried them, merged from both workers
    assert (free.remaining == 0).all() and not free.authorized.any()  # the earlier traffic had filled the window
    overlapping = [u for u, a in ledger.accounts.items() if (a.timeline().sent[1:] < a.timeline().done[:-1]).any()]
    assert overlapping  # requests of one user in flight together: the check compared only certain orders


def test_limitadors_check_then_update_race_passes(tmp_path: Path) -> None:
    scenarios = tmp_path / "burst.yaml"
    scenarios.write_text(BURST)
    with LocalStack([str(DEPLOY)], overshoot=0.2, rate_limit_headers=True) as racing:
        record = run(racing, tmp_path / "runs", "--scenario-file", str(scenarios), scenario="shared-burst")
    free = RunRecord.load(record).ledger.accounts["freeuser1"]
    assert free.sent == 8 and free.authorized > 2  # requests read the same counter before each other's update
    answers = header_answers(free)
    assert answers is not None and sorted(answers.remaining[answers.authorized].tolist()) == [1] * free.authorized
    code, outcomes, output = checks(record, tmp_path)
    assert (code, failures(outcomes)) == (0, {}), output[-3000:]
    assert witness_outcomes(tmp_path) == {"test_rate_limit_headers_agree[freeuser1-free-user-requests]": "passed"}


def test_the_same_run_twice_inside_one_window_passes(headed: LocalStack, tmp_path: Path) -> None:
    headed.restart_gateway()
    for attempt in ("1", "2"):
        code, outcomes, output = checks(run(headed, tmp_path / attempt), tmp_path)
        assert (code, failures(outcomes)) == (0, {}), output[-3000:]
        assert witness_outcomes(tmp_path) == {f"test_rate_limit_headers_agree[{u}-user-requests]": "passed"
                                              for u in ("freeuser1-free", "premiumuser1-premium", "premiumuser2-premium")}


def test_a_remaining_not_decremented_fails_naming_the_user(headed: LocalStack, tmp_path: Path) -> None:
    headed.restart_gateway(["headers-stale:premiumuser1"])
    code, outcomes, output = checks(run(headed, tmp_path), tmp_path)
    failed = failures(outcomes)
    assert (code, set(failed)) == (1, {"test_rate_limit_headers_agree[premiumuser1-premium-user-requests]"}), \
        output[-3000:]
    assert witness_outcomes(tmp_path) == {"test_rate_limit_headers_agree[freeuser1-free-user-requests]": "passed",
                                          "test_rate_limit_headers_agree[premiumuser1-premium-user-requests]": "failure",
                                          "test_rate_limit_headers_agree[premiumuser2-premium-user-requests]": "passed"}
    assert re.fullmatch(rf"Failed: premiumuser1: request 1 \(sent {CLOCK}\) got through, but its X-RateLimit-Remaining"
                        r" says 10 of premium-user-requests \(10 per 120 s\) left: its own hit was not counted\n.*",
                        failed["test_rate_limit_headers_agree[premiumuser1-premium-user-"
                                                       "requests]"], re.S)


def test_a_window_forgotten_early_fails_naming_the_user(headed: LocalStack, tmp_path: Path) -> None:
    headed.restart_gateway(["early-reset:freeuser1"])
    record = run(headed, tmp_path)
    assert RunRecord.load(record).ledger.accounts["freeuser1"].authorized == 4  # 200, 200, 429, then 200, 200
    code, outcomes, output = checks(record, tmp_path)
    failed = failures(outcomes)
    assert (code, set(failed)) == (1, {"test_rate_limit_headers_agree[freeuser1-free-user-requests]",
                                       "test_policy_limit_held[freeuser1-free-user-requests]",
                                       "test_answers_follow_the_policy[freeuser1]",
                                       "test_counts_match_the_window_model[freeuser1]"}), output[-3000:]
    assert witness_outcomes(tmp_path) == {"test_rate_limit_headers_agree[freeuser1-free-user-requests]": "failure",
                                          "test_rate_limit_headers_agree[premiumuser1-premium-user-requests]": "passed",
                                          "test_rate_limit_headers_agree[premiumuser2-premium-user-requests]": "passed"}
    assert re.fullmatch(rf"Failed: freeuser1: request 4 \(sent {CLOCK}\) got through, but request 2 \(answered "
                        rf"{CLOCK}, before it was sent\) had said 0 left in a window lasting until at least {CLOCK}: "
                        r"free-user-requests \(2 per 120 s\) was already full \(and 1 more\)\n.*",
                        failed["test_rate_limit_headers_agree[freeuser1-free-user-requests]"], re.S)


def test_a_limit_other_than_the_policys_fails_naming_the_user(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"  # what the cluster enforces: the free limit raised to 3
    cluster.mkdir()
    for manifest in DEPLOY.iterdir():
        text = manifest.read_text()
        (cluster / manifest.name).write_text(text.replace("- limit: 2\n", "- limit: 3\n"))
    with LocalStack([str(cluster)], rate_limit_headers=True) as raised:
        record = run(raised, tmp_path / "runs")  # Locust and the checks read deploy/kuadrant: the free limit is 2
    code, outcomes, output = checks(record, tmp_path)
    message = failures(outcomes).get("test_rate_limit_headers_agree[freeuser1-free-user-requests]", "")
    assert code == 1 and re.fullmatch(
        rf"Failed: freeuser1: request 1 \(sent {CLOCK}\) has X-RateLimit-Limit `3, 3;w=120;name=\"free-user-requests\"`"
        r": it lists free-user-requests \(3 per 120 s\), but the policy says free-user-requests \(2 per 120 s\)\n.*",
        message, re.S), output[-3000:]
    assert witness_outcomes(tmp_path) == {"test_rate_limit_headers_agree[freeuser1-free-user-requests]": "failure",
                                          "test_rate_limit_headers_agree[premiumuser1-premium-user-requests]": "passed",
                                          "test_rate_limit_headers_agree[premiumuser2-premium-user-requests]": "passed"}
