"""A Prometheus behind auth, like OpenShift's thanos-querier: the stand-in's Prometheus behind Debian's nginx with TLS
from a test CA and a bearer token. The seed-demo run reads it through the proxy and passes its checks; a wrong
token, or an untrusted certificate, is one line naming the URL; the token appears in no output and no run folder."""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nginx_proxy import AuthProxy, auth_proxy
from test_checks_e2e import locust_run
from test_locust_e2e import locust_args
from test_plan import DEPLOY, ROOT

from chargeback.prometheus import PrometheusAuth
from chargeback.pytest_plugin import CheckResult, check_results, parse_junit
from chargeback.record import COMPLETE, RunRecord
from chargeback.verify import gather
from sim.stack import LocalStack

pytestmark = pytest.mark.e2e

TOKEN = f"good-{secrets.token_hex(12)}"
WRONG = f"wrong-{secrets.token_hex(12)}"
SEED_COUNTS = {"premiumuser1": (8, 0), "freeuser1": (2, 3), "premiumuser2": (6, 0)}
Outcomes = dict[str, tuple[str, str]]  # check -> (passed | skipped | failed | error, message)


@pytest.fixture(scope="module")
def proxy(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthProxy]:
    with auth_proxy(tmp_path_factory.mktemp("proxy"), stack.prometheus_url, TOKEN) as running:
        yield running


@pytest.fixture(scope="module")
def token_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The right and the wrong token, each in a file of a folder of their own (outside every run folder)."""
    folder = tmp_path_factory.mktemp("secrets")
    (folder / "token").write_text(f"{TOKEN}\n")
    (folder / "wrong").write_text(f"{WRONG}\n")
    return {"right": folder / "token", "wrong": folder / "wrong"}


@pytest.fixture(scope="module")
def history_run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seed-demo record without snapshots: the checks must read the counters' history through the proxy."""
    run = locust_run(stack, tmp_path_factory.mktemp("history"), prometheus=False)
    assert not (run / "snapshots.json").exists()
    return run


@pytest.fixture(scope="module")
def direct(stack: LocalStack, history_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcomes:
    """The checks' outcomes on `history_run` reading the stand-in's Prometheus directly: every one passes (or
    cannot be decided); through the proxy they must be the same."""
    code, outcomes, output = checks(history_run, tmp_path_factory.mktemp("direct"), environment(), "--prometheus-url",
                                    stack.prometheus_url)
    assert code == 0 and {o for o, _ in outcomes.values()} == {"passed", "skipped"}, output[-3000:]
    return outcomes


def environment(token: str | None = None) -> dict[str, str]:
    """This process's environment with $PROMETHEUS_TOKEN set to `token` (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_TOKEN"}
    return {**env, "PROMETHEUS_TOKEN": token} if token else env


def holding(folder: Path, *texts: str) -> list[str]:
    """The files under `folder` whose bytes contain any of `texts`."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and any(t.encode() in p.read_bytes() for t in texts)]


def checks(run: Path, folder: Path, env: dict[str, str], *extra: str) -> tuple[int, Outcomes, str]:
    """`pytest --run RUN` as a user runs it, in `folder`: exit code, test -> (outcome, message), output."""
    junit = folder / "checks.xml"
    junit.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, "-m", "pytest", "--run", str(run), "-p", "no:cacheprovider",
                           f"--junitxml={junit}", *extra], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=120)
    return done.returncode, outcomes_of(parse_junit(junit.read_text()) if junit.exists() else []), (
        done.stdout + done.stderr)


def outcomes_of(results: list[CheckResult]) -> Outcomes:
    """Each check's outcome and message, by its name."""
    return {r.name: (r.outcome, r.message) for r in results}


def naming(output: str, url: str) -> list[str]:
    """The lines of `output` that name `url`."""
    return [line for line in output.splitlines() if url in line]


def test_seed_demo_reads_prometheus_through_the_proxy_and_passes_its_checks(stack: LocalStack, proxy: AuthProxy,
                                                                            token_files: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    stack.restart_gateway()
    runs = tmp_path / "runs"
    logged = len(proxy.access_log.read_text().splitlines())
    args = locust_args(stack.gateway_url, runs, [DEPLOY], "--headless", "--scenario", "seed-demo", "--check",
                       "--prometheus-url", proxy.url, "--prometheus-token-file", str(token_files["right"]),
                       "--prometheus-ca", str(proxy.ca))
    done = subprocess.run(args, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0 and re.search(r"^\d+ passed, \d+ skipped in ", done.stdout, re.M), (
        done.stdout + done.stderr)[-3000:]  # --check: the checks ran, every one passed or could not be decided
    record = RunRecord.load(runs / "latest")
    assert (record.state, record.meta["prometheus_url"], record.meta["prometheus_auth"]) == (
        COMPLETE, proxy.url, {"token": f"--prometheus-token-file {token_files['right']}", "ca": str(proxy.ca),
                              "insecure": False})
    assert {k: s.source for k, s in record.snapshots.items()} == {"before": proxy.url, "after": proxy.url}
    v = gather(record.path, auth=PrometheusAuth.resolve(None, str(token_files["right"]), str(proxy.ca)))
    assert {u: (c.server_authorized, c.server_limited) for u, c in v.users.items()} == SEED_COUNTS
    requests = [line for line in proxy.access_log.read_text().splitlines()[logged:] if "/api/v1/" in line]
    assert requests and {line.split('"')[2].split()[0] for line in requests} == {"200"}  # every read came through
    assert TOKEN not in done.stdout + done.stderr and holding(tmp_path, TOKEN) == []


def test_a_wrong_token_is_one_line_naming_the_url_and_the_401(stack: LocalStack, proxy: AuthProxy,
                                                              token_files: dict[str, Path], history_run: Path,
                                                              direct: Outcomes, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    args = locust_args(stack.gateway_url, runs, [DEPLOY], "--headless", "--scenario", "seed-demo",
                       "--prometheus-url", proxy.url, "--prometheus-token", WRONG, "--prometheus-ca", str(proxy.ca))
    done = subprocess.run(args, cwd=ROOT, env=environment(TOKEN), capture_output=True, text=True, timeout=60)
    refused = (f"error: Prometheus at {proxy.url}: HTTP 401 Unauthorized with the token of --prometheus-token "
               "(check it); no request was sent")
    assert (done.returncode, naming(done.stdout + done.stderr, proxy.url), done.stderr.strip().splitlines()[-1]) == (
        2, [refused], refused), done.stderr[-3000:]
    assert not runs.exists() and WRONG not in done.stdout + done.stderr

    # the checks, later, take the token from their own command (here $PROMETHEUS_TOKEN), never from the record
    outputs = []
    for token, line in [(WRONG, f"ERROR: Prometheus at {proxy.url}: HTTP 401 Unauthorized with the token of "
                                "$PROMETHEUS_TOKEN (check it)"),
                        (None, f"ERROR: Prometheus at {proxy.url}: HTTP 401 Unauthorized without a token (give one "
                               "with --prometheus-token, --prometheus-token-file or $PROMETHEUS_TOKEN)")]:
        code, outcomes, output = checks(history_run, tmp_path, environment(token), "--prometheus-url", proxy.url,
                                        "--prometheus-ca", str(proxy.ca))
        assert (code, outcomes, naming(output, proxy.url)) == (4, {}, [line]), output[-3000:]
        outputs.append(output)
    code, outcomes, output = checks(history_run, tmp_path, environment(TOKEN), "--prometheus-url", proxy.url,
                                    "--prometheus-ca", str(proxy.ca))
    assert (code, outcomes) == (0, direct), output[-3000:]

    report = [sys.executable, "-m", "chargeback", "report", "--prometheus-url", proxy.url, "--prometheus-ca",
              str(proxy.ca), "--prometheus-token-file", str(token_files["wrong"])]
    for extra in ([str(history_run), "--out", str(tmp_path / "report")], ["--since", "5m", "--out", str(tmp_path)]):
        done = subprocess.run([*report, *extra], cwd=ROOT, env=environment(), capture_output=True, text=True,
                              timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", (
            f"error: Prometheus at {proxy.url}: HTTP 401 Unauthorized with the token of --prometheus-token-file "
            f"{token_files['wrong']} (check it)\n"))
        outputs.append(done.stderr)
    assert all(WRONG not in text for text in outputs) and holding(history_run.parent, WRONG, TOKEN) == []
    assert holding(tmp_path, WRONG, TOKEN) == []


def test_an_untrusted_certificate_is_one_line_and_insecure_skips_the_check(stack: LocalStack, proxy: AuthProxy,
                                                                           history_run: Path,
                                                                           direct: Outcomes,
                                                                           tmp_path: Path) -> None:
    tls = (f"Prometheus at {proxy.url}: TLS: certificate verify failed: unable to get local issuer certificate; "
           "trust its certificate's CA with --prometheus-ca FILE, or skip the check with --insecure")
    args = locust_args(stack.gateway_url, tmp_path / "runs", [DEPLOY], "--headless", "--scenario", "seed-demo",
                       "--prometheus-url", proxy.url)
    done = subprocess.run(args, cwd=ROOT, env=environment(TOKEN), capture_output=True, text=True, timeout=60)
    assert (done.returncode, naming(done.stdout + done.stderr, proxy.url)) == (
        2, [f"error: {tls}; no request was sent"]), done.stderr[-3000:]
    code, outcomes, output = checks(history_run, tmp_path, environment(TOKEN), "--prometheus-url", proxy.url)
    assert (code, outcomes, naming(output, proxy.url)) == (4, {}, [f"ERROR: {tls}"]), output[-3000:]
    code, outcomes, output = checks(history_run, tmp_path, environment(TOKEN), "--prometheus-url", proxy.url,
                                    "--insecure")
    assert (code, outcomes) == (0, direct), output[-3000:]
    assert "InsecureRequestWarning" not in output and TOKEN not in output


def test_a_token_file_that_cannot_be_read_stops_locust_and_the_checks_with_one_line(stack: LocalStack,
                                                                                   history_run: Path,
                                                                                   tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "token"
    line = f"--prometheus-token-file {missing}: cannot read it (No such file or directory)"
    args = locust_args(stack.gateway_url, tmp_path / "runs", [DEPLOY], "--headless", "--scenario", "seed-demo",
                       "--prometheus-url", stack.prometheus_url, "--prometheus-token-file", str(missing))
    done = subprocess.run(args, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip().splitlines()[-1]) == (2, f"error: {line}; no request was sent")
    code, _, output = checks(history_run, tmp_path, environment(), "--prometheus-token-file", str(missing))
    assert (code, [x for x in output.splitlines() if str(missing) in x]) == (4, [f"ERROR: {line}"]), output[-3000:]


def test_the_checks_locust_and_the_web_ui_start_get_the_runs_credentials(proxy: AuthProxy, history_run: Path,
                                                                          token_files: dict[str, Path],
                                                                          direct: Outcomes,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_TOKEN", raising=False)
    auth = PrometheusAuth.resolve(None, str(token_files["right"]), str(proxy.ca))
    code, results, output = check_results(history_run, "--prometheus-url", proxy.url, auth=auth, timeout=120)
    assert (code, outcomes_of(results)) == (0, direct), output[-3000:]
    code, results, output = check_results(history_run, "--prometheus-url", proxy.url, timeout=120)
    assert (code, results, naming(output, proxy.url)) == (4, [], [
        f"ERROR: Prometheus at {proxy.url}: TLS: certificate verify failed: unable to get local issuer certificate; "
        "trust its certificate's CA with --prometheus-ca FILE, or skip the check with --insecure"])
    assert TOKEN not in output
