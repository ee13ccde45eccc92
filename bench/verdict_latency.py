"""Seconds from the end of traffic to the checks' verdict, on the stand-in with a 1 s scrape.

Run from the repository root: `python bench/verdict_latency.py [--runs 5]`. One LocalStack (deploy/kuadrant) is
started; each run restarts its gateway (fresh counters), runs the seed-demo headless with `--check` and times
from the run's last answer (the ledger) to the moment Locust exits with the checks' verdict. It prints
BELOW TARGET when any run took longer than 3 s, but exits 0 all the same; it exits 1 only when something failed
(a check, Locust, the stack).
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chargeback.record import RecordError, RunRecord  # noqa: E402
from gateway_speed import parse_count, run_in_workdir  # noqa: E402
from sim.stack import LocalStack  # noqa: E402

POLICY = REPO_ROOT / "deploy" / "kuadrant"
SCENARIO = "seed-demo"
TARGET_SECONDS = 3.0
LOCUST_TIMEOUT = 120.0
PARTS = ("traffic end -> record finished", "record finished -> locust exit", "verdict latency")


@dataclass(frozen=True)
class Timing:
    """Epoch times of one run: its last answer, the record's `ended`, and Locust's exit."""

    traffic_end: float
    record_finished: float
    exited: float

    def parts(self) -> tuple[float, float, float]:
        """Seconds of each part of PARTS; the last is their sum."""
        return (self.record_finished - self.traffic_end, self.exited - self.record_finished,
                self.exited - self.traffic_end)


def locust_command(stack: LocalStack, runs_dir: Path) -> list[str]:
    """The headless seed-demo run with the checks, recording into `runs_dir`."""
    return [sys.executable, "-m", "locust", "-f", "locustfile.py", "--headless", "-H", stack.gateway_url,
            "--scenario", SCENARIO, "--prometheus-url", stack.prometheus_url, "--check", "--runs-dir", str(runs_dir)]


def timed_run(stack: LocalStack, runs_dir: Path) -> Timing:
    """A fresh gateway, one Locust run that must exit 0 (every check passed); its Timing."""
    stack.restart_gateway()
    done = subprocess.run(locust_command(stack, runs_dir), cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=LOCUST_TIMEOUT)
    exited = time.time()
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-3000:]
        raise RuntimeError(f"locust --check exited {done.returncode} (a check failed or the run broke):\n{output}")
    record = RunRecord.load(runs_dir / "latest")
    traffic_end, ended = record.ledger.last_answer(), record.meta["ended"]
    if traffic_end is None or ended is None:
        raise RuntimeError(f"{record.path}: no answer in the ledger or no end time in the record")
    return Timing(traffic_end, ended, exited)


def measure(runs: int, workdir: Path) -> list[Timing]:
    """One stack; `runs` timed runs against it, each printed as it ends."""
    timings: list[Timing] = []
    with LocalStack([str(POLICY)]) as stack:
        for index in range(runs):
            timings.append(timed_run(stack, workdir / f"runs{index}"))
            print(row(f"run {index + 1}", timings[-1].parts()), flush=True)
    return timings


def row(label: str, seconds: tuple[float, ...]) -> str:
    """One table line: the label, then seconds per column of PARTS."""
    return f"{label:<8}" + "".join(f"{value:>{len(part) + 3}.2f}" for part, value in zip(PARTS, seconds))


def report(timings: list[Timing]) -> None:
    """The median and max of each part, the verdict latency against the target, and its share of the budget."""
    columns = list(zip(*(timing.parts() for timing in timings)))
    median, worst = statistics.median(columns[-1]), max(columns[-1])
    print(row("median", tuple(statistics.median(column) for column in columns)))
    print(row("max", tuple(max(column) for column in columns)))
    print()
    verdict = "BELOW TARGET" if worst > TARGET_SECONDS else "OK"
    print(f"verdict latency median {median:.2f} s, max {worst:.2f} s (target <= {TARGET_SECONDS:g} s)  {verdict}")
    print(f"median latency = {median / TARGET_SECONDS:.2f} of the {TARGET_SECONDS:g} s budget")


def main(argv: list[str] | None = None) -> int:
    runs = parse_count(argv, __doc__, "--runs", 5, "seed-demo runs to time (default 5)")

    def body(workdir: Path) -> None:
        print(f"{runs} x `locust --headless --scenario {SCENARIO} --check` against the stand-in "
              "(Prometheus scraping every 1 s); seconds:", flush=True)
        print(f"{'':<8}" + "".join(f"   {part}" for part in PARTS), flush=True)
        report(measure(runs, workdir))

    return run_in_workdir("verdict-latency-", body, (RecordError,))


if __name__ == "__main__":
    sys.exit(main())
