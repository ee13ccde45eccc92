"""Load the verification once per session and parametrize the checks by user, group and limit."""
from __future__ import annotations

import pytest

from chargeback.record import RecordError
from chargeback.verify import Verification, VerifyError, gather
from checks.failures import clock

_KEY = pytest.StashKey[Verification]()


def pytest_configure(config: pytest.Config) -> None:
    """Gather once, before collection; a one-line `ERROR: ...` and a non-zero exit when it cannot be done."""
    run = config.getoption("--run")
    if not run:
        raise pytest.UsageError("the checks need --run runs/<run-id> (or runs/latest)")
    try:
        config.stash[_KEY] = gather(run, config.getoption("--prometheus-url"), config.getoption("--metrics-url"),
                                    config.getoption("--schema"), config.getoption("--job"),
                                    config.getoption("--namespace"), config.getoption("--partial"),
                                    config.getoption("--limiter-timeout"))
    except (RecordError, VerifyError) as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    """What is being verified, and from where."""
    v = config.stash[_KEY]
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


def verification(config: pytest.Config) -> Verification:
    return config.stash[_KEY]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if not {"user", "plan_user", "group", "user_rate", "token_user"} & set(names):
        return
    v = verification(metafunc.config)
    if "user" in names:
        metafunc.parametrize("user", sorted(v.users))
    if "plan_user" in names:
        metafunc.parametrize("plan_user", sorted(u for u, c in v.users.items() if c.tier is not None) or [None])
    if "group" in names:
        metafunc.parametrize("group", sorted(v.groups))
    if "user_rate" in names:
        cases = [(u, r) for u, c in sorted(v.users.items()) for r in c.rates]
        metafunc.parametrize("user_rate", cases, ids=[f"{u}-{r.limit_name}" for u, r in cases])
    if "token_user" in names:
        metafunc.parametrize("token_user", sorted(u for u, c in v.users.items() if c.server_tokens is not None) or [None])


@pytest.fixture(scope="session")
def v(request: pytest.FixtureRequest) -> Verification:
    return verification(request.config)
