"""Distributed across hosts, not only processes: a Locust master and two workers on hosts of their own (network
namespaces joined by veth pairs to a bridge, `tests/netns.py`), the stand-in (gateway, model simulator, Prometheus)
on a third, run with Locust's own `--master` and `--worker --master-host`, as `deploy/locust/` runs them.

The ledger merges exactly over the network and the checks' verdict equals one process's; a worker whose cable is
pulled mid-run leaves an incomplete record naming it (exit code 3)."""
from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import Hosts, usable
from test_plan import DEPLOY, ROOT

from chargeback.record import COMPLETE, INCOMPLETE, RunRecord

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROLES = ["master", "worker1", "worker2", "gateway"]
READY_WAIT = 60.0  # seconds a stand-in may take to start (Prometheus applies its targets after ~5 s)
RUN_WAIT = 60.0  # seconds a Locust run may take, all told
SEED_DEMO = {  # user -> (sent, authorized, limited, total tokens, each request's status), the default manifests' Plan
    "premiumuser1": (8, 8, 0, 176, (200,) * 8), "freeuser1": (5, 2, 3, 24, (200,) * 2 + (429,) * 3),
    "premiumuser2": (6, 6, 0, 102, (200,) * 6)}
STATS_LINE = re.compile(r"(Type|-+\||\s+Aggregated|POST|GET|Response time|\s*$)")  # Locust's tables
REALISTIC_HOURS_USERS = {"premiumuser1", "premiumuser2", "enterpriseuser1", "freeuser1", "freeuser2"}

# Run on a host (the master's: Prometheus is reached over the network, as by the master): the built-in checks'
# results on a run record, or the gateway's counters of its users (authorized, limited) from Prometheus.
CHECKS = """
import json, sys
from chargeback.pytest_plugin import check_results
code, results, output = check_results(sys.argv[1], timeout=120)
print(json.dumps({"code": code, "results": [[r.module, r.name, r.outcome] for r in results], "output": output}))
"""
SERVER_COUNTS = """
import json, sys
from chargeback.verify import gather
v = gather(sys.argv[1], prometheus_url=sys.argv[2], partial=True)
print(json.dumps({u: [c.server_authorized, c.server_limited] for u, c in v.users.items()
                  if c.server_authorized or c.server_limited}))
"""


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    why = usable()
    if why:
        pytest.skip(f"no hosts for the distributed tests: {why}")
    with Hosts(ROLES) as made:
        yield made


@contextlib.contextmanager
def stand_ins(hosts: Hosts, logs: Path, *ports: tuple[int, int]) -> Iterator[list[tuple[str, str]]]:
    """`chargeback stack up` on the gateway's host once per (gateway port, Prometheus port), each on loopback there
    with a forwarder from the host's address (as a Service): their (gateway URL, Prometheus URL) from the other hosts,
    once each Prometheus has scraped its gateway. Stopped (bounded) at the end."""
    addr, started = hosts.addr["gateway"], []  # (process, its log, the line it prints when ready)
    try:
        for i, (gateway, prometheus) in enumerate(ports):
            for name, argv, ready in (
                    (f"stack-{i}", [sys.executable, "-m", "chargeback", "stack", "up", "--policy", str(DEPLOY),
                                    "--gateway-port", str(gateway), "--prometheus-port", str(prometheus)], "ready;"),
                    (f"forward-{i}", [sys.executable, str(ROOT / "tests" / "netns.py"), "forward", addr, str(gateway),
                                      str(prometheus)], "forwarding ")):
                log = logs / f"{name}.log"
                with open(log, "w") as out:
                    started.append((hosts.popen("gateway", argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT),
                                    log, ready))
        deadline = time.monotonic() + READY_WAIT
        for process, log, ready in started:
            while not re.search(f"^{ready}", log.read_text(), re.M) and time.monotonic() < deadline:
                assert process.poll() is None, f"{log.name}: exited: {log.read_text()[-2000:]}"
                time.sleep(0.1)
            assert re.search(f"^{ready}", log.read_text(), re.M), f"{log.name}: not ready: {log.read_text()[-2000:]}"
        yield [(f"http://{addr}:{gateway}", f"http://{addr}:{prometheus}") for gateway, prometheus in ports]
    finally:
        for process, _, _ in started:
            process.send_signal(signal.SIGTERM)
        for process, _, _ in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def locust(*extra: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--policy", str(DEPLOY), *extra]


def on_host(hosts: Hosts, role: str, script: str, *args: str) -> dict:
    """A Python script run on a host; the JSON it prints."""
    done = hosts.run(role, [sys.executable, "-c", script, *args], timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def checks_verdict(hosts: Hosts, run: Path) -> tuple[int, list[tuple[str, str, str]]]:
    """The built-in checks on a run record, run on the master's host: pytest's exit code, each check's outcome."""
    found = on_host(hosts, "master", CHECKS, str(run))
    assert found["results"], found["output"][-3000:]
    return found["code"], [tuple(r) for r in found["results"]]


def totals(record: RunRecord) -> dict[str, tuple[int, int, int, int, tuple[int, ...]]]:
    """Per user: sent, authorized, limited, total tokens, and the status of each request in the ledger's timeline."""
    return {u: (a.sent, a.authorized, a.limited, a.total_tokens, tuple(sorted(s for _, _, s, _ in a.entries())))
            for u, a in record.ledger.accounts.items()}


class Distributed:
    """A headless master on the master's host and a worker on each worker's host, with Locust's own --master and
    --worker --master-host (default port 5557); every output in `logs`."""

    def __init__(self, hosts: Hosts, logs: Path, master_args: list[str]):
        self.hosts, self.logs = hosts, logs
        self.master_log = logs / "master.log"
        with open(self.master_log, "w") as out:
            self.master = hosts.popen("master", locust("--headless", "--master", "--expect-workers", "2",
                                                       *master_args), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        self.workers: dict[str, subprocess.Popen] = {}
        for role in ("worker1", "worker2"):
            with open(logs / f"{role}.log", "w") as out:
                self.workers[role] = hosts.popen(role, locust("--worker", "--master-host", hosts.addr["master"],
                                                              "--loglevel", "INFO"),
                                                 cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    def wait(self) -> int:
        """The master's exit code (bounded: a master still running after RUN_WAIT fails the test, with its log)."""
        try:
            return self.master.wait(timeout=RUN_WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the master still runs after {RUN_WAIT:g} s; its log ends: {self.output()[-3000:]}")

    def output(self, role: str = "master") -> str:
        """A process's output without Locust's statistics tables."""
        text = (self.master_log if role == "master" else self.logs / f"{role}.log").read_text()
        return "\n".join(line for line in text.splitlines() if not STATS_LINE.match(line))

    def close(self) -> None:
        """Kill whatever is still running (a worker cut off from its master waits for it a minute)."""
        for process in (self.master, *self.workers.values()):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def test_master_and_workers_on_their_own_hosts_merge_exactly_and_verify_as_one_process(hosts: Hosts,
                                                                                      tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with stand_ins(hosts, tmp_path, (8000, 9090), (8001, 9091)) as [(gateway, prometheus), (gateway1, prometheus1)]:
        run = Distributed(hosts, tmp_path, ["-H", gateway, "--prometheus-url", prometheus, "--scenario",
                                            "seed-demo", "--runs-dir", str(runs / "distributed"), "--check",
                                            "--loglevel", "INFO"])
        try:
            code = run.wait()
            worker_codes = {role: w.wait(timeout=30) for role, w in run.workers.items()}  # the master let them go
        finally:
            run.close()
        assert code == 0, run.output()[-3000:]
        assert worker_codes == {"worker1": 0, "worker2": 0}, run.output("worker1")[-2000:]
        distributed = RunRecord.load(runs / "distributed" / "latest")
        one = hosts.run("master", locust("--headless", "-H", gateway1, "--prometheus-url", prometheus1, "--scenario",
                                         "seed-demo", "--runs-dir", str(runs / "one"), "--check", "--loglevel",
                                         "WARNING"), timeout=RUN_WAIT, cwd=ROOT)
        assert one.returncode == 0, one.stderr[-3000:]
        single = RunRecord.load(runs / "one" / "latest")
        verdicts = [checks_verdict(hosts, record.path) for record in (distributed, single)]
    assert (distributed.state, distributed.meta["workers"], distributed.meta["gateway_url"]) == (COMPLETE, 2, gateway)
    assert (single.state, single.meta["workers"], single.meta["gateway_url"]) == (COMPLETE, 0, gateway1)
    assert totals(distributed) == totals(single) == SEED_DEMO
    assert all(a.sent == a.authorized + a.limited + a.rejected and a.errors == a.unanswered == 0
               for record in (distributed, single) for a in record.ledger.accounts.values())
    peers = set(re.findall(r"^port (\d+): connection from (\S+)$", (tmp_path / "forward-0.log").read_text(), re.M))
    assert {(str(8000), hosts.addr[role]) for role in ("master", "worker1", "worker2")} <= peers  # over the network
    assert (str(9090), hosts.addr["master"]) in peers
    (code, results), (single_code, single_results) = verdicts
    assert results == single_results and code == single_code == 0
    assert {outcome for _, _, outcome in results} <= {"passed", "skipped"}
    assert sum(outcome == "passed" for _, _, outcome in results) >= 10


def test_a_worker_cut_off_mid_run_leaves_an_incomplete_record_naming_it(hosts: Hosts, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    with stand_ins(hosts, tmp_path, (8002, 9092)) as [(gateway, prometheus)]:
        run = Distributed(hosts, tmp_path, ["-H", gateway, "--prometheus-url", prometheus, "--scenario",
                                            "realistic-hours", "--runs-dir", str(runs), "--loglevel", "INFO"])
        try:
            for _ in range(300):  # bounded: until the run record exists (the workers are running users)
                if (runs / "latest" / "record.json").exists() or run.master.poll() is not None:
                    break
                time.sleep(0.1)
            time.sleep(3)  # each worker has claimed its simulated users and sent (and reported) requests
            assert run.master.poll() is None, run.output()[-3000:]
            hosts.cut("worker2")
            code = run.wait()
            assert run.workers["worker1"].wait(timeout=30) == 0, run.output("worker1")[-2000:]
            assert run.workers["worker2"].poll() is None  # still running, cut off from its master
        finally:
            hosts.mend("worker2")
            run.close()
        record = RunRecord.load(runs / "latest")
        server = on_host(hosts, "master", SERVER_COUNTS, str(record.path), prometheus)
    log = run.output()
    assert (record.state, code) == (INCOMPLETE, 3), log[-3000:]
    missing = re.findall(r"Worker (\S+) failed to send heartbeat, setting state to missing", log)
    assert len(missing) == 1 and missing[0].startswith(f"{hosts.ns['worker2']}_"), log[-3000:]  # its hostname
    lost = missing[0]
    assert record.meta["reason"] == (f"worker(s) lost during the run: {lost}; no final report from worker(s) {lost}")
    assert hosts.ns["worker1"] not in json.dumps(record.meta)
    unaccounted = record.meta["unaccounted"]
    assert re.fullmatch(rf"worker\(s\) {lost} lost: their requests since their last report \(([\d:]+|the start)\) "
                        r"are not in the ledger", unaccounted["why"]), unaccounted["why"]
    cut_users = set(unaccounted["users"])
    assert cut_users and cut_users < REALISTIC_HOURS_USERS  # worker1 ran the others
    accounts = record.ledger.accounts
    assert all(a.sent == a.authorized + a.limited + a.rejected + a.unanswered for a in accounts.values())
    kept = {u: (a.authorized, a.limited) for u, a in accounts.items() if u not in cut_users}
    assert set(kept) == REALISTIC_HOURS_USERS - cut_users and all(sum(c) > 0 for c in kept.values())
    for user, (authorized, limited) in kept.items():  # worker1's share: exactly what the gateway counted
        s_authorized, s_limited = server.get(user, (0, 0))
        assert 0 <= (s_authorized - authorized) + (s_limited - limited) <= accounts[user].unanswered, (user, server)
    for user in cut_users:  # worker2's share up to its last report: no more than the gateway counted
        s_authorized, s_limited = server.get(user, (0, 0))
        reported = accounts.get(user)  # none before its first report
        assert reported is None or (reported.authorized <= s_authorized and reported.limited <= s_limited), user
