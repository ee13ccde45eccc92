"""Requests/s of the stand-in gateway on one core, against one Locust process and a static nginx.

Run from the repository root: `python bench/gateway_speed.py [--seconds 5]`. The server under test is pinned to
CPU 0 and the load generator to CPU 1 (`taskset`), so every figure is "one core serving, one core loading".
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO_ROOT / "bench"
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from sim.model import ModelSimulator  # noqa: E402
from sim.process import ManagedProcess  # noqa: E402
from sim.prometheus import free_port  # noqa: E402

COMPLETIONS_PATH = "/v1/completions"
BODY = '{"model":"Qwen/Qwen3-0.6B","prompt":"Premium request","max_tokens":20}'
HEADERS = {"Content-Type": "application/json", "Authorization": "APIKEY premiumuser1_key"}
FULL_PATH_POLICIES = ["deploy/kuadrant/api-keys.yaml", "deploy/kuadrant/auth-policy.yaml",
                      "bench/policy/rate-limit-policy.yaml"]
LIMITED_POLICIES = ["deploy/kuadrant"]  # premium: 10 requests per 2 minutes, so nearly every answer is 429
SERVER_CPU = "0"
LOAD_CPU = "1"
CONNECTIONS = 32
TARGET_RATIO = 2.5
INSTALL_HINTS = {"wrk": "apt-get install wrk nginx-light", "nginx": "apt-get install wrk nginx-light",
                 "taskset": "apt-get install util-linux"}


@dataclass(frozen=True)
class Figure:
    """One row of the table."""

    label: str
    requests_per_second: float
    answers: str


@dataclass(frozen=True)
class WrkResult:
    """The figures read from one wrk run."""

    requests_per_second: float
    requests: int
    non_2xx: int
    socket_errors: str | None


def check_prerequisites(tools: Iterable[str] = tuple(INSTALL_HINTS)) -> None:
    """Raise a one-line RuntimeError when one of `tools` or Locust is missing or CPUs 0 and 1 are not both usable."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found on PATH; install it: {INSTALL_HINTS[tool]}")
    if importlib.util.find_spec("locust") is None:
        raise RuntimeError(f"locust is not installed for {sys.executable}; install it: pip install locust")
    usable = os.sched_getaffinity(0)
    if not {int(SERVER_CPU), int(LOAD_CPU)} <= usable:
        raise RuntimeError(f"needs CPUs {SERVER_CPU} and {LOAD_CPU}; this process may use only {sorted(usable)}")


@contextlib.contextmanager
def running(process: ManagedProcess) -> Iterator[ManagedProcess]:
    """Start `process` until its ready URL answers; stop it (and its children) on the way out."""
    try:
        process.start()
        yield process
    finally:
        process.stop()


def gateway(policies: list[str], workdir: Path, name: str) -> ManagedProcess:
    """The stand-in gateway on a free loopback port, pinned to the server CPU."""
    port = free_port()
    argv = ["taskset", "-c", SERVER_CPU, sys.executable, "-m", "sim.gateway", "--port", str(port), "--schema", "seed"]
    argv += [arg for policy in policies for arg in ("--policy", policy)]
    return ManagedProcess(name, argv, str(workdir / f"{name}.log"), f"http://127.0.0.1:{port}/status",
                          cwd=str(REPO_ROOT))


def completion_json() -> str:
    """The body the stand-in answers to BODY, so nginx returns the same bytes."""
    answer = asyncio.run(ModelSimulator().respond("POST", COMPLETIONS_PATH, json.loads(BODY)))
    text = answer.body.decode()
    if set(text) & set("'\\$"):
        raise RuntimeError("the completion JSON needs quoting for nginx's return directive")
    return text


def nginx(workdir: Path) -> ManagedProcess:
    """nginx with one worker, pinned to the server CPU, answering every request with a fixed completion."""
    prefix = workdir / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path body;
    proxy_temp_path proxy;
    fastcgi_temp_path fastcgi;
    uwsgi_temp_path uwsgi;
    scgi_temp_path scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ default_type application/json; return 200 '{completion_json()}'; }}
    }}
}}
""")
    argv = ["taskset", "-c", SERVER_CPU, "nginx", "-c", str(conf), "-p", str(prefix),
            "-g", f"daemon off; pid {prefix / 'nginx.pid'};"]
    return ManagedProcess("nginx", argv, str(workdir / "nginx.log"), f"http://127.0.0.1:{port}/")


def base_url(process: ManagedProcess) -> str:
    """scheme://host:port of a server, from its ready URL."""
    return urlsplit(process.ready_url)._replace(path="").geturl()


def write_wrk_script(workdir: Path) -> Path:
    """A wrk Lua script sending BODY with HEADERS as a POST."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY)}"]
    lines += [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in HEADERS.items()]
    path = workdir / "completions.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_tool(argv: list[str], seconds: int, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a load generator pinned to the load CPU, with a bounded wait; `env` replaces the environment if given."""
    return subprocess.run(["taskset", "-c", LOAD_CPU, *argv], capture_output=True, text=True,
                          timeout=seconds + 60, cwd=str(REPO_ROOT), env=env)


def run_wrk(url: str, script: Path, seconds: int) -> WrkResult:
    """Drive `url` with wrk (1 thread, CONNECTIONS connections) and parse its summary."""
    done = run_tool(["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), url], seconds)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", done.stdout, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", done.stdout, re.MULTILINE)
    if done.returncode != 0 or rate is None or total is None:
        raise RuntimeError(f"wrk {url} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", done.stdout)
    errors = re.search(r"Socket errors:.*", done.stdout)
    return WrkResult(float(rate.group(1)), int(total.group(1)), int(non_2xx.group(1)) if non_2xx else 0,
                     errors.group(0) if errors else None)


def require_all_2xx(result: WrkResult, what: str) -> None:
    """Fail when some answers were not 2xx: then the full path was not what was measured."""
    if result.non_2xx:
        raise RuntimeError(f"{what}: {result.non_2xx} of {result.requests} responses were not 2xx, "
                           "so the full path was not measured")


def run_locust(url: str, workdir: Path, seconds: int) -> float:
    """One headless Locust process of bench/locust_bare.py users; the Aggregated Requests/s from its CSV."""
    return run_locust_csv(["-f", str(BENCH_DIR / "locust_bare.py"), "--headless", "-u", str(CONNECTIONS),
                           "-r", str(CONNECTIONS), "-t", f"{seconds}s", "-H", url, "--only-summary"],
                          workdir / "locust", seconds)


def run_locust_csv(options: list[str], prefix: Path, seconds: int, env: dict[str, str] | None = None) -> float:
    """`python -m locust <options> --csv <prefix>` pinned to the load CPU; the Aggregated Requests/s from its CSV.

    Fails when Locust made no requests or recorded any failure, because then the full path was not measured.
    """
    done = run_tool([sys.executable, "-m", "locust", *options, "--csv", str(prefix)], seconds, env)
    stats = Path(f"{prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no {stats.name} (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    with stats.open(newline="") as f:
        row = next((r for r in csv.DictReader(f) if r["Name"] == "Aggregated"), None)
    if row is None or int(row["Request Count"]) == 0:
        raise RuntimeError(f"locust made no requests (exit {done.returncode}): {done.stderr.strip()[-300:]}")
    if int(row["Failure Count"]):
        raise RuntimeError(f"locust: {row['Failure Count']} of {row['Request Count']} requests failed, "
                           "so the full path was not measured")
    return float(row["Requests/s"])


def measure(seconds: int, workdir: Path) -> dict[str, Figure]:
    """Every figure, keyed full, locust, limited and nginx."""
    script = write_wrk_script(workdir)
    figures: dict[str, Figure] = {}
    with running(gateway(FULL_PATH_POLICIES, workdir, "gateway-full")) as full:
        wrk = run_wrk(base_url(full) + COMPLETIONS_PATH, script, seconds)
        require_all_2xx(wrk, "stand-in, full path")
        figures["full"] = Figure("stand-in, full path (auth+limit+metrics+model), wrk", wrk.requests_per_second,
                                 answers(wrk))
        figures["locust"] = Figure(f"locust, 1 FastHttpUser process ({CONNECTIONS} users) -> stand-in full path",
                                   run_locust(base_url(full), workdir, seconds), "all 2xx")
    with running(gateway(LIMITED_POLICIES, workdir, "gateway-limited")) as limited:
        wrk = run_wrk(base_url(limited) + COMPLETIONS_PATH, script, seconds)
        figures["limited"] = Figure("stand-in, LIMITED path (premium 10 per 2m: 429s), wrk",
                                    wrk.requests_per_second, answers(wrk))
    with running(nginx(workdir)) as server:
        wrk = run_wrk(base_url(server) + COMPLETIONS_PATH, script, seconds)
        require_all_2xx(wrk, "nginx")
        figures["nginx"] = Figure("nginx static return 200, 1 worker, wrk", wrk.requests_per_second, answers(wrk))
    return figures


def answers(result: WrkResult) -> str:
    """How many answers were not 2xx, and wrk's socket errors if any."""
    text = "all 2xx" if not result.non_2xx else f"{result.non_2xx} of {result.requests} non-2xx"
    return f"{text}; {result.socket_errors}" if result.socket_errors else text


def report(figures: dict[str, Figure]) -> None:
    """Print the table and the two ratios."""
    width = max(len(f.label) for f in figures.values())
    print(f"{'benchmark'.ljust(width)}  {'requests/s':>10}  answers")
    for figure in figures.values():
        print(f"{figure.label.ljust(width)}  {figure.requests_per_second:10.1f}  {figure.answers}")
    stand_in = figures["full"].requests_per_second
    ratio = stand_in / figures["locust"].requests_per_second
    below = "  BELOW TARGET" if ratio < TARGET_RATIO else ""
    print(f"stand-in / locust process = {ratio:.2f} (target >= {TARGET_RATIO}){below}")
    print(f"stand-in / nginx = {stand_in / figures['nginx'].requests_per_second:.2f}")


def parse_count(argv: list[str] | None, doc: str, flag: str, default: int, help_text: str) -> int:
    """The benchmark's one option, a whole number >= 1."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(flag, type=int, default=default, help=help_text)
    value = getattr(parser.parse_args(argv), flag.lstrip("-").replace("-", "_"))
    if value < 1:
        parser.error(f"{flag} must be at least 1")
    return value


def run_in_workdir(prefix: str, body: Callable[[Path], None], errors: tuple[type[Exception], ...] = ()) -> int:
    """Run `body` in a fresh temporary folder (removed afterwards); a one-line error and exit code 1 on failure."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        body(workdir)
    except (RuntimeError, subprocess.TimeoutExpired, OSError, *errors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    seconds = parse_count(argv, __doc__, "--seconds", 5, "duration of each load run (default 5)")

    def body(workdir: Path) -> None:
        check_prerequisites()
        print(f"{seconds}s per run; server on CPU {SERVER_CPU}, load generator on CPU {LOAD_CPU}, "
              f"{CONNECTIONS} connections", flush=True)
        report(measure(seconds, workdir))

    return run_in_workdir("gateway-speed-", body)


if __name__ == "__main__":
    sys.exit(main())
