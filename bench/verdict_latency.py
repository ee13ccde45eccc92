"""Seconds from the end of traffic to the checks' verdict, on the stand-in with a 1 s and with a 30 s scrape.

Run from the repository root: `python bench/verdict_latency.py [--runs 5] [--slow-runs 2]`. For each scrape interval
one LocalStack (deploy/kuadrant) is started; each run restarts its gateway (fresh counters), runs the seed-demo
headless with `--check` and times from the run's last answer (the ledger) to the moment Locust exits with the
checks' verdict, which waits for the gateway's next scrape. Targets: 3 s at a 1 s scrape, one interval + 3 s at
30 s. It prints BELOW TARGET when any run took longer, but exits 0 all the same; it exits 1 only when something
failed (a check, Locust, the stack).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from gateway_speed import run_in_workdir  # noqa: E402

from chargeback.plan import parse_window  # noqa: E402
from chargeback.record import RecordError, RunRecord  # noqa: E402
from sim.stack import LocalStack  # noqa: E402

POLICY = REPO_ROOT / "deploy" / "kuadrant"
SCENARIO = "seed-demo"
SLACK_SECONDS = 3.0  # the target: the scrape interval the verdict must wait for, plus this
LOCUST_TIMEOUT = 300.0
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


def measure(runs: int, interval: str, workdir: Path) -> list[Timing]:
    """One stack scraped every `interval`; `runs` timed runs against it, each printed as it ends."""
    timings: list[Timing] = []
    with LocalStack([str(POLICY)], scrape_interval=interval) as stack:
        for index in range(runs):
            timings.append(timed_run(stack, workdir / f"runs-{interval}-{index}"))
            print(row(f"run {index + 1}", timings[-1].parts()), flush=True)
    return timings


def row(label: str, seconds: tuple[float, ...]) -> str:
    """One table line: the label, then seconds per column of PARTS."""
    return f"{label:<8}" + "".join(f"{value:>{len(part) + 3}.2f}" for part, value in zip(PARTS, seconds))


def report(timings: list[Timing], interval: str) -> None:
    """The median and max of each part, the verdict latency against the target, and its share of the budget."""
    target = parse_window(interval) + SLACK_SECONDS if parse_window(interval) > 1 else SLACK_SECONDS
    columns = list(zip(*(timing.parts() for timing in timings)))
    median, worst = statistics.median(columns[-1]), max(columns[-1])
    print(row("median", tuple(statistics.median(column) for column in columns)))
    print(row("max", tuple(max(column) for column in columns)))
    verdict = "BELOW TARGET" if worst > target else "OK"
    print(f"scrape every {interval}: verdict latency median {median:.2f} s, max {worst:.2f} s "
          f"(target <= {target:g} s)  {verdict}")
    print(f"median latency = {median / target:.2f} of the {target:g} s budget\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs at a 1 s scrape (default 5)")
    parser.add_argument("--slow-runs", type=int, default=2, help="runs at a 30 s scrape (default 2; 0 skips them)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.slow_runs < 0:
        parser.error("--runs must be at least 1 and --slow-runs at least 0")

    def body(workdir: Path) -> None:
        for runs, interval in ((args.runs, "1s"), (args.slow_runs, "30s")):
            if not runs:
                continue
            print(f"{runs} x `locust --headless --scenario {SCENARIO} --check` against the stand-in "
                  f"(Prometheus scraping every {interval}); seconds:", flush=True)
            print(f"{'':<8}" + "".join(f"   {part}" for part in PARTS), flush=True)
            report(measure(runs, interval, workdir), interval)

    return run_in_workdir("verdict-latency-", body, (RecordError,))


if __name__ == "__main__":
    sys.exit(main())
