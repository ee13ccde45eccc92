"""The suite's cost per request at scale: the ledger's bytes per request (a worker's memory, the master's, the run
record), the window model's requests per second, and the verdict's seconds and peak memory for synthetic run
records of 1 and 10 million requests over 10,000 identities.

Run from the repository root: `python bench/verdict_scale.py [--millions 1,10] [--identities 10000]`. Each
synthetic run: every identity of the demo's tiers (API-key Secrets generated as in plan_scale.py) sends steadily,
one request every 0.47 s answered in 20 ms, Limitador's fixed windows deciding each answer; the record holds the
counters before and after the run, equal to what the client saw (an honest gateway), so every check must pass.
The master's part runs in a child process (its peak memory is that process's): it merges the workers' drained
deltas, one report per 100,000 requests, and writes the record (its peak memory is read then; the read-back
that follows is timed only). The verdict is `pytest --run` on the record, in
a child process, as Locust's --check runs it.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from gateway_speed import run_in_workdir
from plan_scale import write_policy

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chargeback import expectations  # noqa: E402
from chargeback.counters import Snapshot  # noqa: E402
from chargeback.expectations import Prior, explain, most_authorized, predict  # noqa: E402
from chargeback.ledger import AUTHORIZED, LIMITED, NO_REPORT, Account, Ledger, Timeline  # noqa: E402
from chargeback.plan import Rate, load_plan  # noqa: E402
from chargeback.record import RunRecord  # noqa: E402
from chargeback.summary import PlanSummary  # noqa: E402

PERIOD, LATENCY = 0.47, 0.02  # seconds between one identity's requests, and to its answer
TOKENS = 22  # the usage each 200 reports
REPORT = 100_000  # requests per worker report (the master merges one delta per report)
NS = {"limitador_namespace": "llm/vllm-httproute"}
METRICS = ("authorized_calls_with_user_and_group", "limited_calls_with_user_and_group")


def steady_answers(n: int, rate: Rate, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Send times and statuses of `n` steady requests under one fixed-window limit: a window opens at the first
    request after the last one expired, so with PERIOD not dividing the window every window holds the same
    number of requests, the first `limit` of them allowed."""
    sent = offset + np.arange(n) * PERIOD
    per_window = int(np.ceil(rate.window / PERIOD))
    return sent, np.where(np.arange(n) % per_window < rate.limit, 200, 429).astype(np.int16)


def synthetic_deltas(plan: PlanSummary, per_identity: int, start: float):
    """The workers' drained deltas, REPORT requests at a time (each identity's requests, in send order)."""
    batch = Ledger()
    in_batch = 0
    for number, identity in enumerate(plan.identities):
        [rate], _ = plan.rates_of(identity.user)
        sent, status = steady_answers(per_identity, rate, start + (number % 97) * 0.003)
        for lo in range(0, per_identity, REPORT):
            part = slice(lo, min(lo + REPORT, per_identity))
            account = batch.accounts.setdefault(identity.user, Account(identity.user, identity.tier))
            statuses = status[part]
            account.sent += len(statuses)
            account.authorized += int((statuses == 200).sum())
            account.limited += int((statuses == 429).sum())
            account.first = float(sent[part][0]) if account.first is None else account.first
            account.last = float(sent[part][-1])
            for column, values in zip(account.columns, (sent[part], sent[part] + LATENCY, statuses,
                                                        np.full(len(statuses), number, dtype=np.int32),
                                                        np.where(statuses == 200, TOKENS, NO_REPORT).astype(np.int32))):
                column.frombytes(values.tobytes())
            in_batch += len(statuses)
            if in_batch >= REPORT:
                yield batch.drain()
                in_batch = 0
    yield batch.drain()


def master(policy: Path, runs: Path, millions: float) -> None:
    """Child process: merge the deltas of `millions` of requests, write the record with honest snapshots; print
    a JSON line with figures."""
    plan = PlanSummary.of(load_plan([policy]))
    total = int(millions * 1_000_000)
    per_identity = total // len(plan.identities)
    record = RunRecord.start(runs, {"scenario": "soak", "limitador": {"before": {"counters": [], "read": [0, 0]}}},
                             plan)
    start = record.meta["started"]
    record.meta["limitador"]["before"]["read"] = [start, start]
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the Plan read, before any request
    ledger = Ledger()
    merging = 0.0
    for delta in synthetic_deltas(plan, per_identity, start):
        began = time.perf_counter()
        ledger.merge(delta)
        merging += time.perf_counter() - began
    columns = sum(c.buffer_info()[1] * c.itemsize for a in ledger.accounts.values() for c in a.columns)
    requests = ledger.requests()
    end = max(a.last for a in ledger.accounts.values()) + 1.0
    after = {name: [({"__name__": name, **NS, "user": a.user, "group": a.tier}, float(getattr(a, kind)))
                    for a in ledger.accounts.values()] for name, kind in zip(METRICS, ("authorized", "limited"))}
    record.snapshots = {"before": Snapshot("synthetic", start, {name: [] for name in METRICS}, covers=(start, start)),
                        "after": Snapshot("synthetic", end, after, covers=(end, end))}
    began = time.perf_counter()
    record.finish(ledger, complete=True)
    writing = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the master's part ends here
    del ledger
    ledger_file = record.path / "ledger.npz"
    began = time.perf_counter()
    loaded = RunRecord.load(record.path)
    reading = time.perf_counter() - began
    assert loaded.ledger.requests() == requests
    print(json.dumps({"path": str(record.path), "requests": requests, "memory_bytes": columns,
                      "file_bytes": ledger_file.stat().st_size, "merge_s": merging, "write_s": writing,
                      "read_s": reading, "peak_rss_mb": peak, "baseline_mb": baseline}))


def worker_bytes_per_request(count: int = 200_000) -> float:
    """Memory a worker's ledger takes per request, traced while recording `count` requests over 1,000 users."""
    ledger = Ledger()
    for i in range(1000):
        ledger.record(f"user{i}", "free", 0.0, 0.1, 200)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        ledger.record(f"user{i % 1000}", "free", 1000.0 + i, 1000.1 + i, 200 if i % 3 else 429, None, i % 50)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / count


def model_speed(requests: int) -> tuple[float, float]:
    """Requests per second through predict, explain and most_authorized for one identity's steady timeline, with
    one-step stretches and (on a tenth of it) following every request; both as measured."""
    rate = Rate("premium-user-requests", 10, 120.0)

    def timeline(n: int) -> Timeline:
        sent, status = steady_answers(n, rate, 0.0)
        outcome = np.where(status == 200, AUTHORIZED, LIMITED).astype("<U1")
        return Timeline(sent, sent + LATENCY, outcome, np.zeros(n, dtype=np.int32))

    def speed(t: Timeline) -> float:
        prior = Prior.fresh([rate], -1.0)
        began = time.perf_counter()
        p, e = predict(t, [rate], prior), explain(t, [rate], prior)
        most_authorized(t, rate, 0, prior)
        seconds = time.perf_counter() - began
        assert p.decided and e.consistent, (p, e)
        return len(t) / seconds

    fast = speed(timeline(requests))
    stretch_end = expectations._Scan.stretch_end
    expectations._Scan.stretch_end = lambda self, states, rates, index, limit: index
    try:
        slow = speed(timeline(requests // 10))
    finally:
        expectations._Scan.stretch_end = stretch_end
    return fast, slow


def verdict(record: str) -> dict:
    """`pytest --run` with the built-in checks on the record, in a child process: seconds, exit code, peak MB."""
    script = ("import resource, sys, pytest; code = pytest.main(sys.argv[1:]); "
              "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr); "
              "sys.exit(code)")
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT / "checks"), "--run", record, "-q",
                           "-p", "no:cacheprovider", "-p", "chargeback.pytest_plugin"],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": "/usr/bin:/bin"})
    seconds = time.perf_counter() - began
    peak = float(done.stderr.rsplit("PEAK", 1)[1].split()[0])
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-500:]
    return {"seconds": seconds, "code": done.returncode, "peak_mb": peak, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--millions", default="1,10", help="sizes of the synthetic runs, in millions of requests")
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--master", nargs=3, metavar=("POLICY", "RUNS", "MILLIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.master:
        master(Path(args.master[0]), Path(args.master[1]), float(args.master[2]))
        return 0

    def body(workdir: Path) -> None:
        policy = write_policy(workdir / "policy", args.identities)
        print(f"worker ledger: {worker_bytes_per_request():.1f} bytes per request (traced, 200,000 requests)")
        fast, slow = model_speed(1_000_000)
        print(f"window model, steady traffic, one identity: {fast:,.0f} requests/s with one-step stretches, "
              f"{slow:,.0f} requests/s following every request: {fast / slow:.0f}x")
        for millions in (float(m) for m in args.millions.split(",")):
            child = subprocess.run([sys.executable, __file__, "--master", str(policy), str(workdir / "runs"),
                                    str(millions)], capture_output=True, text=True, cwd=REPO_ROOT)
            if child.returncode:
                raise RuntimeError(f"the master's part failed: {child.stderr[-2000:]}")
            m = json.loads(child.stdout.strip().splitlines()[-1])
            n = m["requests"]
            print(f"{n:,} requests over {args.identities:,} identities: master merged {n // REPORT} deltas in "
                  f"{m['merge_s']:.2f} s; {m['memory_bytes'] / n:.1f} bytes per request in its memory, "
                  f"{m['file_bytes'] / n:.1f} in the record ({m['file_bytes'] / 1e6:.0f} MB); record written in "
                  f"{m['write_s']:.2f} s, read back in {m['read_s']:.2f} s; master's peak memory "
                  f"{m['peak_rss_mb']:.0f} MB ({m['baseline_mb']:.0f} MB with the Plan read, before any request)")
            v = verdict(m["path"])
            print(f"  verdict (pytest --run): {v['seconds']:.1f} s, peak memory {v['peak_mb']:.0f} MB, exit "
                  f"{v['code']}: {v['summary']}")
            shutil.rmtree(m["path"], ignore_errors=True)

    return run_in_workdir("verdict-scale-", body)


if __name__ == "__main__":
    sys.exit(main())
