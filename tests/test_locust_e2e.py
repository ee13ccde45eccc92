"""Locust for real against the stand-in with a real Prometheus: every scenario's ledger equals the gateway's own
counters; --processes 2 aggregates exactly; the web UI tab shows the live table; Ctrl-C leaves an incomplete record."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
from browser import rendered_dom
from test_plan import DEPLOY, ROOT, secret, write

from chargeback.record import COMPLETE, INCOMPLETE, RunRecord
from chargeback.verify import gather
from scenarios import MISSING, UNKNOWN
from sim.prometheus import free_port
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMITS = {"free": 2, "premium": 10, "enterprise": 50}


def locust_args(gateway: str, runs: Path, policies: list[Path], *extra: str) -> list[str]:
    args = [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "-H", gateway,
            "--runs-dir", str(runs), "--loglevel", "WARNING", *extra]
    return args + [arg for policy in policies for arg in ("--policy", str(policy))]


def run_locust(gateway: str, runs: Path, policies: list[Path], *extra: str) -> RunRecord:
    """A headless run (bounded); exit code 0 required; the record it wrote."""
    result = subprocess.run(locust_args(gateway, runs, policies, "--headless", *extra), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return RunRecord.load(runs / "latest")


def server_counts(stack: LocalStack, record: RunRecord) -> dict[str, tuple[int, int]]:
    """user -> (authorized, limited) increases in Prometheus, after a scrape later than the run's last answer."""
    v = gather(record.path, prometheus_url=stack.prometheus_url)
    return {u: (c.server_authorized, c.server_limited) for u, c in v.users.items()
            if c.server_authorized or c.server_limited}


def client_counts(record: RunRecord) -> dict[str, tuple[int, int]]:
    return {a.user: (a.authorized, a.limited) for a in record.ledger.accounts.values() if a.authorized or a.limited}


@pytest.fixture
def policies(tmp_path: Path) -> list[Path]:
    """The default manifests plus one user in a group the AuthPolicy disallows."""
    extra = tmp_path / "extra"
    extra.mkdir()
    write(extra, "gold.yaml", secret("golduser", "gold"))
    return [DEPLOY, extra]


@pytest.mark.parametrize("scenario", ["seed-demo", "realistic-hours", "saturation", "bad-keys"])
def test_each_scenario_ledger_equals_the_gateways_counters(scenario: str, policies: list[Path], tmp_path: Path) -> None:
    with LocalStack([str(p) for p in policies]) as stack:
        record = run_locust(stack.gateway_url, tmp_path / "runs", policies, "--scenario", scenario)
        server = server_counts(stack, record)
    accounts = record.ledger.accounts
    assert (record.state, record.meta["scenario"], record.meta["gateway_url"]) == (COMPLETE, scenario, stack.gateway_url)
    unanswered = {a.user: a.unanswered for a in accounts.values()}  # stopped mid-request at the run's end
    client = client_counts(record)
    assert set(server) <= set(client) and all(
        0 <= (s_a - c_a) + (s_l - c_l) <= unanswered[u] and s_a >= c_a and s_l >= c_l
        for u, (c_a, c_l) in client.items() for s_a, s_l in [server.get(u, (0, 0))])
    assert all(a.sent == a.authorized + a.limited + a.rejected + a.unanswered and a.errors == a.unanswered
               for a in accounts.values())
    if scenario != "saturation":  # only a timed scenario stops users mid-request
        assert server == client and sum(unanswered.values()) == 0
    assert all(len(a.entries()) == a.sent for a in accounts.values())
    if scenario == "seed-demo":
        assert server == {"premiumuser1": (8, 0), "freeuser1": (2, 3), "premiumuser2": (6, 0)}
        assert accounts["premiumuser1"].total_tokens == 8 * (2 + 20)
    elif scenario == "realistic-hours":  # three rounds inside one 2-minute window
        assert server == {"premiumuser1": (10, 5), "premiumuser2": (10, 5), "enterpriseuser1": (15, 0),
                          "freeuser1": (2, 7), "freeuser2": (2, 7)}
        assert record.ledger.accounts["premiumuser1"].last - record.ledger.accounts["premiumuser1"].first > 20
    elif scenario == "saturation":
        plan_tiers = {a.user: a.tier for a in accounts.values()}
        assert {u: a for u, (a, _) in server.items()} == {u: LIMITS[t] for u, t in plan_tiers.items()}
        assert all(limited > 10 for _, limited in server.values())
    else:
        assert server == {}
        assert {u: (a.sent, a.rejected) for u, a in accounts.items()} == {
            MISSING: (3, 3), UNKNOWN: (3, 3), "golduser": (3, 3)}


def test_two_processes_give_the_same_totals_as_one(policies: list[Path], tmp_path: Path) -> None:
    records = []
    for processes in ("1", "2"):
        with LocalStack([str(p) for p in policies]) as stack:
            extra = ("--processes", processes) if processes == "2" else ()
            records.append(run_locust(stack.gateway_url, tmp_path / processes, policies, "--scenario", "seed-demo", *extra))
    one, two = records
    assert (one.meta["workers"], two.meta["workers"], two.state) == (0, 2, COMPLETE)

    def totals(record: RunRecord) -> dict:
        return {u: (a.sent, a.authorized, a.limited, a.total_tokens, len(a.entries()))
                for u, a in record.ledger.accounts.items()}

    assert totals(two) == totals(one) == {
        "premiumuser1": (8, 8, 0, 176, 8), "freeuser1": (5, 2, 3, 24, 5), "premiumuser2": (6, 6, 0, 102, 6)}


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def test_web_ui_tab_shows_the_live_table_and_starts_the_picked_scenario(policies: list[Path], tmp_path: Path) -> None:
    port = free_port()
    ui = f"http://127.0.0.1:{port}"
    with LocalStack([str(p) for p in policies]) as stack:
        locust = subprocess.Popen(locust_args("http://127.0.0.1:1", tmp_path / "runs", policies, "--web-host",
                                              "127.0.0.1", "--web-port", str(port)),
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            for _ in range(100):  # bounded wait for the UI
                try:
                    with urllib.request.urlopen(ui, timeout=1) as response:
                        page = response.read().decode()
                    break
                except OSError:
                    time.sleep(0.1)
            assert '"title": "Chargeback"' in page or '"title":"Chargeback"' in page
            form = urllib.parse.urlencode({"host": stack.gateway_url, "scenario": "realistic-hours"}).encode()
            with urllib.request.urlopen(urllib.request.Request(f"{ui}/swarm", data=form), timeout=5) as response:
                assert json.loads(response.read())["success"] is True
            table: dict = {}
            for _ in range(100):  # bounded: until both premium users have sent something
                table = get_json(f"{ui}/chargeback/table?user=premium")
                if sum(r["sent"] for r in table["search"]["rows"]) >= 4:
                    break
                time.sleep(0.1)
            by_user = {r["user"]: r for r in table["search"]["rows"]}
            premium = next(t for t in table["totals"] if t["tier"] == "premium")
            assert {"premiumuser1", "premiumuser2"} <= set(by_user)
            assert premium["sent"] == by_user["premiumuser1"]["sent"] + by_user["premiumuser2"]["sent"]
            page_dom = rendered_dom(f"{ui}/?tab=chargeback")
            assert "Rejected (401/403)" in page_dom and ">premiumuser1<" in page_dom  # the tab, drawn by the UI
            stats = get_json(f"{ui}/stats/requests")
            assert stats["extended_stats"][0]["key"] == "chargeback" and stats["extended_stats"][0]["data"]
            with urllib.request.urlopen(f"{ui}/chargeback/csv", timeout=5) as response:
                csv_text = response.read().decode()
            assert csv_text.splitlines()[0] == ("tier,user,sent,authorized,limited,rejected,errors,prompt_tokens,"
                                                "completion_tokens,total_tokens,cost")
            urllib.request.urlopen(urllib.request.Request(f"{ui}/stop", data=b"", method="POST"), timeout=5).read()
            for _ in range(100):  # bounded: the record is finished after the stop
                record = RunRecord.load(tmp_path / "runs" / "latest")
                if record.state != "running":
                    break
                time.sleep(0.1)
        finally:
            locust.send_signal(signal.SIGTERM)
            locust.communicate(timeout=30)
    assert (record.meta["scenario"], record.meta["gateway_url"], record.state) == (
        "realistic-hours", stack.gateway_url, INCOMPLETE)
    assert record.meta["reason"].startswith("stopped before the scenario finished: 0 of 5 simulated users done")
    assert record.ledger.accounts["premiumuser1"].sent >= 2


def test_ctrl_c_leaves_a_readable_incomplete_record(policies: list[Path], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with LocalStack([str(p) for p in policies]) as stack:
        locust = subprocess.Popen(locust_args(stack.gateway_url, runs, policies, "--headless", "--scenario",
                                              "realistic-hours"), cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        for _ in range(100):  # bounded: until the run record exists
            if (runs / "latest" / "record.json").exists():
                break
            time.sleep(0.1)
        time.sleep(2)
        locust.send_signal(signal.SIGINT)
        _, err = locust.communicate(timeout=60)
    record = RunRecord.load(runs / "latest")
    assert (record.state, locust.returncode) == (INCOMPLETE, 3), err[-2000:]
    assert record.meta["reason"].startswith("stopped before the scenario finished: 0 of 5 simulated users done")
    assert record.ledger.accounts["premiumuser1"].sent >= 2
    assert "premiumuser1_key" not in (record.path / "record.json").read_text()
    assert not os.path.exists(record.path / ".record.json.tmp")


def test_bad_manifests_or_a_scenario_the_plan_cannot_serve_stop_locust_with_one_line(tmp_path: Path) -> None:
    def locust_error(policies: list[Path]) -> tuple[int, str]:
        result = subprocess.run(locust_args("http://127.0.0.1:1", tmp_path, policies, "--headless", "--scenario",
                                            "seed-demo"), cwd=ROOT, capture_output=True, text=True, timeout=60)
        return result.returncode, result.stderr.strip().splitlines()[-1]

    assert locust_error([tmp_path / "missing.yaml"]) == (1, f"error: {tmp_path}/missing.yaml: no such file or folder")
    code, line = locust_error([DEPLOY / "auth-policy.yaml"])
    assert (code, line) == (2, f"error: scenario seed-demo sends nothing under the Plan ({DEPLOY}/auth-policy.yaml): "
                               "no identity matches its streams")
    assert not (tmp_path / "latest").exists()


def test_a_lost_worker_ends_the_run_with_an_incomplete_record(policies: list[Path], tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with LocalStack([str(p) for p in policies]) as stack:
        locust = subprocess.Popen(locust_args(stack.gateway_url, runs, policies, "--headless", "--scenario",
                                              "realistic-hours", "--processes", "2"), cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(100):  # bounded: until the run record exists (the workers are running users)
            if (runs / "latest" / "record.json").exists():
                break
            time.sleep(0.1)
        time.sleep(2)  # each worker has claimed its simulated users and sent requests
        workers = psutil.Process(locust.pid).children()
        assert len(workers) == 2
        workers[0].kill()
        _, err = locust.communicate(timeout=60)
    record = RunRecord.load(runs / "latest")
    assert (record.state, locust.returncode) == (INCOMPLETE, 3), err[-2000:]
    assert record.meta["reason"].startswith("worker(s) lost during the run: ")
    lost = record.meta["unaccounted"]
    assert lost["users"] and set(lost["users"]) < {"premiumuser1", "premiumuser2", "enterpriseuser1", "freeuser1",
                                                   "freeuser2"}
    assert re.match(r"worker\(s\) \S+ lost: their requests since their last report \(([\d:]+|the start)\) are not "
                    r"in the ledger", lost["why"]), lost["why"]  # (killed before its first report: "the start")
    assert sum(a.sent for a in record.ledger.accounts.values()) > 0  # the surviving worker's share is kept


def test_a_worker_that_loaded_another_plan_gets_no_users_and_the_record_says_so(policies: list[Path],
                                                                                 tmp_path: Path) -> None:
    runs, port = tmp_path / "runs", free_port()
    with LocalStack([str(DEPLOY)]) as stack:
        master = subprocess.Popen(locust_args(stack.gateway_url, runs, [DEPLOY], "--headless", "--master",
                                              "--scenario", "seed-demo", "--master-bind-port", str(port), "--expect-workers", "1"),
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        worker = subprocess.Popen(locust_args(stack.gateway_url, runs, policies, "--worker", "--master-port",
                                              str(port)), cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            _, err = master.communicate(timeout=90)
        finally:
            worker.kill()
            worker.wait(timeout=30)
    record = RunRecord.load(runs / "latest")
    assert (record.state, master.returncode) == (INCOMPLETE, 3), err[-6000:]
    assert re.search(r"worker \S+ loaded another Plan \(digest [0-9a-f]{16}, the master's [0-9a-f]{16}\): start "
                     r"master and workers with the same --policy", record.meta["reason"]), record.meta["reason"]
    assert sum(a.sent for a in record.ledger.accounts.values()) == 0
