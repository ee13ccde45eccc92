"""An end-to-end soak: the local stand-in with thousands of identities, Locust with `--processes 2` sending as fast
as it can for minutes, the checks at the end; the master's memory sampled over time.

Run from the repository root: `python bench/soak_e2e.py [--minutes 10] [--identities 10000] [--users 4000]`.
It writes `--identities` API-key Secrets in the demo's tiers (as plan_scale.py) beside the demo's policies, starts
the stand-in (gateway, model simulator, Prometheus scraping every second), and runs Locust's controls headless:
`--users` simulated users (half per worker) spread over every identity round-robin, back to back
(`--pattern none`), for `--minutes`, with `--check`. It prints the master's resident memory every 30 s, the
requests sent, the ledger's totals against the server's counters, the checks' exit code and the record's size.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psutil
from gateway_speed import run_in_workdir
from plan_scale import write_policy

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from chargeback.record import RunRecord  # noqa: E402
from chargeback.verify import gather  # noqa: E402
from sim.stack import LocalStack  # noqa: E402

SAMPLE_EVERY = 30.0  # seconds between samples of the master's memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--identities", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=4000, help="simulated users in all (half per worker)")
    parser.add_argument("--runs-dir", type=Path, help="keep the run record there (default: removed at the end)")
    args = parser.parse_args(argv)

    def body(workdir: Path) -> None:
        policy = write_policy(workdir / "policy", args.identities)
        seconds = int(args.minutes * 60)
        runs = args.runs_dir or workdir / "runs"
        began = time.monotonic()
        stack = LocalStack([str(policy)]).start(timeout=120.0)  # the gateway reads the Plan of every identity
        try:
            print(f"stand-in up with {args.identities:,} identities in {time.monotonic() - began:.1f} s", flush=True)
            command = [sys.executable, "-m", "locust", "-f", str(REPO_ROOT / "locustfile.py"), "--headless",
                       "-H", stack.gateway_url, "--policy", str(policy), "--prometheus-url", stack.prometheus_url,
                       "--runs-dir", str(runs), "--processes", "2", "-u", str(args.users),
                       "-r", str(max(args.users // 20, 1)), "-t", f"{seconds}s", "--pattern", "none", "--check",
                       "--loglevel", "INFO", "--only-summary"]
            master = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True)
            samples = []
            start = time.monotonic()
            while master.poll() is None and time.monotonic() - start < seconds + 600:
                try:
                    samples.append((time.monotonic() - start, psutil.Process(master.pid).memory_info().rss / 2**20))
                except psutil.NoSuchProcess:
                    break
                print(f"  {samples[-1][0]:6.0f} s: master {samples[-1][1]:6.0f} MB", flush=True)
                time.sleep(SAMPLE_EVERY)
            output = master.communicate(timeout=600)[0]
            if not (runs / "latest").exists():
                raise RuntimeError(f"Locust exited {master.returncode} without a run record: {output[-3000:]}")
            record = RunRecord.load(runs / "latest")
            if record.state != "complete":
                raise RuntimeError(f"the run is {record.state}: {record.meta['reason']}; Locust said: {output[-3000:]}")
            v = gather(record.path)
            client = sum(c.client.authorized + c.client.limited for c in v.users.values())
            server = sum(c.server_authorized + c.server_limited for c in v.users.values())
            sent = sum(a.sent for a in record.ledger.accounts.values())
            size = (record.path / "ledger.npz").stat().st_size
            during = [mb for t, mb in samples if 60 <= t <= seconds]
            print(f"Locust exit code {master.returncode} (0: every check passed); record {record.state}")
            print(f"{sent:,} requests sent by {record.meta['simulated_users']:,} simulated users over "
                  f"{len(record.ledger.accounts):,} identities in {seconds} s ({sent / seconds:,.0f}/s)")
            print(f"ledger authorized + limited {client:,}, server's counters {server:,}: "
                  f"{'equal' if client == server else 'DIFFERENT'}")
            print(f"ledger file {size / 1e6:.1f} MB, {size / max(sent, 1):.1f} bytes per request")
            if during:
                print(f"master's memory from the first minute to the end: {during[0]:.0f} MB -> {during[-1]:.0f} MB "
                      f"(max {max(during):.0f} MB)")
            if master.returncode:
                print(output[-3000:])
        finally:
            stack.stop()

    return run_in_workdir("soak-e2e-", body)


if __name__ == "__main__":
    sys.exit(main())
