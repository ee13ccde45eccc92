"""The checks as a pytest plugin (entry point `pytest11`): options, one gathering per session, the header, and
fixtures for the built-in checks and a user's own.

    pytest --run runs/latest                  # the built-in checks, from any folder
    pytest my_checks/ --run runs/latest       # your own checks, with the same fixtures
    pytest --run runs/latest --junitxml=verdict.xml

Fixtures: `verification` (everything `chargeback.verify` put side by side), and one case per test: `user_case`
(every user of the run), `plan_user_case` (every identity of the Plan in the run), `token_case` (users whose token
counters can be compared), `limit_case` (a `LimitCase`: a user and one rate of a limit that applies to it) and
`group_case` (a billed group's `GroupCount`). `expect(verdict)` turns a `chargeback.verdicts.Verdict` into a pass,
a failure (title and table, no traceback) or a skip. The batched twins `users_case`, `plan_users_case`,
`tokens_case` and `limits_case` give a list: one case while the run has at most 200 users (the same test ids), a
tier's cases beyond, so that ten thousand identities make a few dozen tests rather than fifty thousand;
`expect_each(verdicts)` fails naming every failing case. The built-in checks use them. Without `--run` the plugin
stays out of the way: a test that asks for its fixtures is a usage error.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from .ledger import LIMITER_TIMEOUT
from .plan import Rate
from .prometheus import PROMETHEUS_AUTH_OPTIONS, PrometheusAuth
from .record import RecordError
from .schema import SCHEMAS
from .verdicts import FAILS, HOLDS, Verdict, clock
from .verify import GroupCount, UserCheck, Verification, VerifyError, format_table, gather

_VERIFICATION = pytest.StashKey[Verification]()
CASES = ("user_case", "plan_user_case", "token_case", "limit_case", "group_case")
BATCHED = {"users_case": "user_case", "plan_users_case": "plan_user_case", "tokens_case": "token_case",
           "limits_case": "limit_case"}  # a batch of cases -> the case fixture of one
PER_USER_UP_TO = 200  # users of a run up to which the batched fixtures give one case a test
FAILURES_LISTED = 20  # cases a failed batch names
NEEDS_RUN = "the checks need --run runs/<run-id> (or runs/latest)"


@dataclass(frozen=True)
class LimitCase:
    """One user and one rate of a limit that applies to it."""

    check: UserCheck
    rate: Rate


def builtin_checks() -> Path:
    """The folder of the built-in checks (the `checks` package)."""
    spec = find_spec("checks")
    assert spec is not None and spec.submodule_search_locations, "the built-in checks are not installed"
    return Path(next(iter(spec.submodule_search_locations)))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chargeback", "chargeback: verify a load test's run record (the checks)")
    group.addoption("--run", metavar="DIR", help="the run record to verify: runs/<run-id> or runs/latest; "
                                                 "without test paths, the built-in checks run")
    group.addoption("--prometheus-url", metavar="URL", help="Prometheus holding the gateway's counters")
    for name, kwargs in PROMETHEUS_AUTH_OPTIONS:
        group.addoption(name, **kwargs)
    group.addoption("--metrics-url", metavar="URL", help="a Limitador-style /metrics URL, when there is no Prometheus")
    group.addoption("--schema", choices=sorted(SCHEMAS), help="metric names (default: detected)")
    group.addoption("--job", metavar="NAME",
                    help="Prometheus scrape job of the gateway's Limitador "
                         "(default: the run's, else found by its series)")
    group.addoption("--namespace", metavar="NS/ROUTE",
                    help="limitador_namespace of the gateway's route (default: the run's, else found by the series)")
    group.addoption("--partial", action="store_true", default=False,
                    help="reconcile an incomplete run for what its record holds (the header says so)")
    group.addoption("--strict-limits", action="store_true", default=False,
                    help="fail any overshoot of a limit, even one the requests in flight at once explain "
                         "(Limitador's check-then-update race); also when the run was started with it")
    group.addoption("--limiter-timeout", type=float, default=LIMITER_TIMEOUT, metavar="SECONDS",
                    help="a request without an answer but in flight longer than this, plus the slowest 401/403/429 "
                         "of the run, was decided by the limiter "
                         f"(the gateway's rate-limit timeout; default {LIMITER_TIMEOUT:g})")


def pytest_configure(config: pytest.Config) -> None:
    """With --run: gather once, before collection (a one-line `ERROR: ...` and a non-zero exit when it cannot be
    done); without test paths, collect the built-in checks."""
    run = config.getoption("--run", None)
    if not run:
        return
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args = [str(builtin_checks())]
    try:  # this command's credentials for Prometheus, never the record's
        auth = PrometheusAuth.resolve(config.getoption("--prometheus-token"),
                                      config.getoption("--prometheus-token-file"),
                                      config.getoption("--prometheus-ca"), config.getoption("--insecure"))
    except ValueError as exc:  # a token file that cannot be read: one line naming it
        raise pytest.UsageError(str(exc)) from None
    try:
        config.stash[_VERIFICATION] = gather(
            run, config.getoption("--prometheus-url"), config.getoption("--metrics-url"), config.getoption("--schema"),
            config.getoption("--job"), config.getoption("--namespace"), config.getoption("--partial"),
            config.getoption("--limiter-timeout"), auth, config.getoption("--strict-limits"))
    except (RecordError, VerifyError) as exc:
        raise pytest.UsageError(str(exc)) from None


def verification_of(config: pytest.Config) -> Verification:
    if _VERIFICATION not in config.stash:
        raise pytest.UsageError(NEEDS_RUN)
    return config.stash[_VERIFICATION]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without --run, a test that asks for the plugin's fixtures is a usage error (one line, exit 4)."""
    fixtures = {"verification", *CASES, *BATCHED}
    if _VERIFICATION not in config.stash and any(fixtures & set(getattr(i, "fixturenames", ())) for i in items):
        raise pytest.UsageError(NEEDS_RUN)


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What is being verified, and from where."""
    if _VERIFICATION not in config.stash:
        return []
    v = config.stash[_VERIFICATION]
    meta = v.record.meta
    lines = [f"chargeback: run {meta['run_id']} (scenario {meta['scenario']}), schema {v.schema.name}, "
             f"counters from {v.after.source}" + (f", limitador_namespace {v.namespace}" if v.namespace else "")]
    if v.partial:
        lines.append(f"chargeback: PARTIAL: the run is {v.record.state} ({meta.get('reason')}); the counters read at "
                     f"{clock(v.after.at)} are reconciled with what the ledger holds")
    for source, users in sorted(v.priors.items()):
        lines.append(f"chargeback: state before the run: {source} ({', '.join(users)})")
    if v.group_fallback:
        lines.append(f"chargeback: no group label for {', '.join(v.group_fallback)}: grouped by the Plan's tiers")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per case of each case fixture the test asks for; per batch of cases for the batched fixtures (one
    case a batch up to PER_USER_UP_TO users, else a tier's cases)."""
    asked = [name for name in (*CASES, *BATCHED) if name in metafunc.fixturenames]
    if not asked or _VERIFICATION not in metafunc.config.stash:  # without --run: a usage error once collected
        return
    v = metafunc.config.stash[_VERIFICATION]
    cases = _cases(v)
    for name in asked:
        if name in BATCHED:
            single = cases[BATCHED[name]]
            batches = _batches(v, single) if single != [(None, None)] else [(None, None)]
            metafunc.parametrize(name, [b for _, b in batches], indirect=True, ids=[i for i, _ in batches])
        else:
            metafunc.parametrize(name, [p for _, p in cases[name]], indirect=True, ids=[i for i, _ in cases[name]])


def _cases(v: Verification) -> dict[str, list[tuple[str | None, Any]]]:
    """Per case fixture: (test id, parameter) of each case; (None, None) where a fixture has none and says why."""
    users = sorted(v.users.items())
    return {
        "user_case": [(u, u) for u, _ in users],
        "plan_user_case": [(u, u) for u, c in users if c.tier is not None] or [(None, None)],
        "token_case": [(u, u) for u, c in users if c.server_tokens is not None] or [(None, None)],
        "limit_case": [(f"{u}-{r.limit_name}", (u, i)) for u, c in users for i, r in enumerate(c.rates)],
        "group_case": [(g, g) for g in sorted(v.groups)],
    }


def _batches(v: Verification, cases: list[tuple[str | None, Any]]) -> list[tuple[str, tuple]]:
    """Each case alone while the run has at most PER_USER_UP_TO users; else the cases of each tier together."""
    if len(v.users) <= PER_USER_UP_TO:
        return [(i, (p,)) for i, p in cases]
    tiers: dict[str, list] = {}
    for _, param in cases:
        user = param[0] if isinstance(param, tuple) else param
        tiers.setdefault(v.users[user].tier or "(none)", []).append(param)
    return [(f"tier {tier}, {len(params)} cases", tuple(params)) for tier, params in sorted(tiers.items())]


@pytest.fixture(scope="session")
def verification(request: pytest.FixtureRequest) -> Verification:
    """Everything the checks assert on: per user, the client's ledger, the server's increases, the window model."""
    return verification_of(request.config)


@pytest.fixture
def user_case(request: pytest.FixtureRequest, verification: Verification) -> UserCheck:
    """One user of the run (an identity of the Plan, or a stranger with series)."""
    return verification.users[request.param]


@pytest.fixture
def plan_user_case(request: pytest.FixtureRequest, verification: Verification) -> UserCheck:
    """One identity of the Plan that the run used."""
    if request.param is None:
        pytest.skip("cannot decide: no identity of the Plan in this run")
    return verification.users[request.param]


@pytest.fixture
def token_case(request: pytest.FixtureRequest, verification: Verification) -> UserCheck:
    """One user under a token limit whose token hits the metrics count."""
    if request.param is None:
        pytest.skip(f"no token counters to compare (no token limit applies, or the {verification.schema.name} "
                    "schema has none)")
    return verification.users[request.param]


@pytest.fixture
def limit_case(request: pytest.FixtureRequest, verification: Verification) -> LimitCase:
    """One user and one rate of a request limit that applies to it."""
    user, index = request.param
    check = verification.users[user]
    return LimitCase(check, check.rates[index])


@pytest.fixture
def group_case(request: pytest.FixtureRequest, verification: Verification) -> GroupCount:
    """One group the server billed (or the client's tier of the users in it)."""
    return verification.groups[request.param]


@pytest.fixture
def users_case(request: pytest.FixtureRequest, verification: Verification) -> list[UserCheck]:
    """A batch of `user_case`s: one user, or a tier's users when the run has more than PER_USER_UP_TO."""
    return [verification.users[u] for u in request.param]


@pytest.fixture
def plan_users_case(request: pytest.FixtureRequest, verification: Verification) -> list[UserCheck]:
    """A batch of `plan_user_case`s."""
    if request.param is None:
        pytest.skip("cannot decide: no identity of the Plan in this run")
    return [verification.users[u] for u in request.param]


@pytest.fixture
def tokens_case(request: pytest.FixtureRequest, verification: Verification) -> list[UserCheck]:
    """A batch of `token_case`s."""
    if request.param is None:
        pytest.skip(f"no token counters to compare (no token limit applies, or the {verification.schema.name} "
                    "schema has none)")
    return [verification.users[u] for u in request.param]


@pytest.fixture
def limits_case(request: pytest.FixtureRequest, verification: Verification) -> list[LimitCase]:
    """A batch of `limit_case`s."""
    return [LimitCase(verification.users[u], verification.users[u].rates[i]) for u, i in request.param]


class PassedWith(UserWarning):
    """What a passing check let pass, and why (an overshoot of a limit the requests in flight at once explain)."""


def expect_each(verdicts: list[Verdict]) -> None:
    """A batch's verdicts: one as `expect`; several fail when any fails (naming every case that does, with their
    tables' rows, FAILURES_LISTED at most), else are skipped when any cannot be decided (saying why), else pass
    (each holding case's note a PassedWith warning)."""
    if len(verdicts) == 1:
        return expect(verdicts[0])
    failed = [v for v in verdicts if v.state == FAILS]
    if failed:
        named = "\n".join(f"- {v.title}" for v in failed[:FAILURES_LISTED])
        more = f"\n- ... and {len(failed) - FAILURES_LISTED} more" if len(failed) > FAILURES_LISTED else ""
        rows = [row for v in failed[:FAILURES_LISTED] for row in v.rows]
        table = f"\n{format_table(rows)}" if rows else ""
        pytest.fail(f"{len(failed)} of {len(verdicts)} cases fail:\n{named}{more}{table}", pytrace=False)
    open_ = [v for v in verdicts if v.state != HOLDS]
    if open_:
        pytest.skip(f"{len(open_)} of {len(verdicts)} cases cannot be decided (the others hold), the first: "
                    f"{open_[0].title}")
    for verdict in verdicts:
        if verdict.note:
            warnings.warn(PassedWith(verdict.note), stacklevel=2)
    return None


def expect(verdict: Verdict) -> None:
    """Pass (its note, if any, a PassedWith warning), fail with the title and the table only (no traceback), or
    skip saying why."""
    if verdict.state == HOLDS:
        if verdict.note:
            warnings.warn(PassedWith(verdict.note), stacklevel=2)
        return
    if verdict.state == FAILS:
        pytest.fail(f"{verdict.title}\n{format_table(verdict.rows)}" if verdict.rows else verdict.title, pytrace=False)
    pytest.skip(verdict.title)


def _checks_command(run: Path, *extra: str, auth: PrometheusAuth | None = None
                    ) -> tuple[list[str], dict[str, str], Path]:
    """The command, environment and folder that run the built-in checks on a run record (reaching Prometheus with
    `auth`: its token in the environment, never on the command line)."""
    auth = auth or PrometheusAuth()
    checks = builtin_checks()
    command = [sys.executable, "-m", "pytest", str(checks), "--run", str(Path(run).resolve()), "-q",
               "-p", "no:cacheprovider", "-p", "chargeback.pytest_plugin", *auth.child_args(), *extra]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",  # no other plugin is needed; loading them costs ~1 s
           **auth.child_env()}
    return command, env, checks.parent


def run_checks(run: Path, *extra: str, auth: PrometheusAuth | None = None) -> int:
    """The built-in checks on a run record in a child process (Locust's --check, the demo); pytest's exit code
    (0 only if every check passed)."""
    command, env, cwd = _checks_command(run, *extra, auth=auth)
    return subprocess.run(command, env=env, cwd=cwd).returncode


@dataclass(frozen=True)
class CheckResult:
    """One check's result, as pytest's JUnit XML report gives it."""

    module: str  # the check's file as a module (JUnit's classname), e.g. checks.test_limits
    name: str  # the test and its case, e.g. test_policy_limit_held[freeuser1-free-user-requests]
    outcome: str  # passed, failed, skipped (cannot decide) or error
    message: str  # a failure's title and table, a skip's reason, an error's summary; "" when passed


JUNIT_OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}  # a test case's child -> outcome


def parse_junit(text: str) -> list[CheckResult]:
    """Each test case of a JUnit XML report, in order."""
    results = []
    for case in ElementTree.fromstring(text).iter("testcase"):
        found = next((child for child in case if child.tag in JUNIT_OUTCOMES), None)
        outcome = "passed" if found is None else JUNIT_OUTCOMES[found.tag]
        message = "" if found is None else found.get("message", "").removeprefix("Failed: ")  # pytest.fail's prefix
        results.append(CheckResult(case.get("classname", ""), case.get("name", ""), outcome, message))
    return results


def check_results(run: Path, *extra: str, timeout: float | None = None, auth: PrometheusAuth | None = None
                  ) -> tuple[int, list[CheckResult], str]:
    """Like run_checks, with each check's result: pytest's exit code, the results, and pytest's output (where a
    usage error's one line is). A TimeoutExpired after `timeout` seconds."""
    command, env, cwd = _checks_command(run, *extra, auth=auth)
    with tempfile.TemporaryDirectory(prefix="checks-") as tmp:
        report = Path(tmp) / "checks.xml"
        done = subprocess.run([*command, f"--junitxml={report}"], env=env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        results = parse_junit(report.read_text()) if report.exists() else []
    return done.returncode, results, done.stdout + done.stderr
