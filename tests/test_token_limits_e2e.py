"""Token limits end to end: the stand-in makes one limiter call per policy kind and opens token windows at the first
report; the checks follow the token model, with and without streaming, with and without a request limit beside
it; a gateway that lets a request through a spent token window fails, naming the user and the request."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_checks_e2e import checks, failures
from test_locust_e2e import run_locust
from test_plan import DEPLOY, limit_policy, write

from chargeback.verify import gather
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FREE = 'auth.identity.groups.split(",").exists(g, g == "free")'
PREMIUM = 'auth.identity.groups.split(",").exists(g, g == "premium")'
SCENARIOS = """\
scenarios:
  - name: tokens
    description: >-
      free (a token limit only) streams, premium (a request limit and a token limit) does not; 10 requests a second
      (a report lands within 5 ms of its answer: a request sent sooner may be checked before it)
    streams:
      - {tiers: [free], pick: [0], requests: 5, pattern: "steady:10/s", prompt: Free request, max_tokens: 10,
         stream: true}
      - {tiers: [premium], pick: [0], requests: 7, pattern: "steady:10/s", prompt: Premium request, max_tokens: 20}
      - {tiers: [premium], pick: [1], requests: 4, pattern: "steady:10/s", prompt: Premium2 request, max_tokens: 15,
         stream: true}
"""


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStack, Path]:
    """The demo's keys and auth, a request limit for premium only, token limits for free and premium."""
    policy = tmp_path_factory.mktemp("policy")
    for name in ("api-keys.yaml", "auth-policy.yaml", "prices.yaml"):
        shutil.copy(DEPLOY / name, policy / name)
    write(policy, "requests.yaml", limit_policy("premium-requests", "[{limit: 4, window: 2m}]", PREMIUM))
    write(policy, "free-tokens.yaml", limit_policy("free-tokens", "[{limit: 30, window: 1m}]", FREE,
                                                   kind="TokenRateLimitPolicy"))
    write(policy, "premium-tokens.yaml", limit_policy("premium-tokens", "[{limit: 50, window: 1m}]", PREMIUM,
                                                      kind="TokenRateLimitPolicy"))
    scenarios = write(tmp_path_factory.mktemp("scenarios"), "tokens.yaml", SCENARIOS)
    with LocalStack([str(policy)], schema="fork") as stack:
        yield stack, scenarios


def run(tokens: tuple[LocalStack, Path], runs: Path, faults: list[str] | None = None) -> Path:
    stack, scenarios = tokens
    stack.restart_gateway(faults)
    record = run_locust(stack.gateway_url, runs, [Path(p) for p in stack.policies], "--scenario-file", str(scenarios),
                        "--scenario", "tokens", "--prometheus-url", stack.prometheus_url)
    return record.path


def test_token_limits_crossed_mid_run_are_followed_exactly(tokens: tuple[LocalStack, Path], tmp_path: Path) -> None:
    path = run(tokens, tmp_path / "runs")
    v = gather(path)
    seen = {u: ([s for _, _, s, _ in sorted(c.client.entries())], c.server_authorized, c.server_limited,
                c.prediction.authorized, c.prediction.limited) for u, c in v.users.items() if c.tier != "enterprise"}
    # freeuser1 (token limit only, 30 a minute, streamed): 12 tokens an answer, so 0, 12 and 24 used let three
    # through, 36 limits; one limiter call per request
    # premiumuser1 (4 requests and 50 tokens): 22 tokens an answer; the fourth request passes the request limit (4 of
    # 4) and is limited by the token check (66 used): two calls counted, authorized + limited; then the request
    # limit limits (one call)
    # premiumuser2 (17 tokens, streamed): 0, 17, 34 then 51 used: the fourth is the token check's 429
    assert seen == {
        "freeuser1": ([200, 200, 200, 429, 429], 3, 2, (3, 3), (2, 2)),
        "premiumuser1": ([200, 200, 200, 429, 429, 429, 429], 7, 4, (7, 7), (4, 4)),
        "premiumuser2": ([200, 200, 200, 429], 7, 1, (7, 7), (1, 1)),
    }
    code, outcomes, output = checks(path, tmp_path)
    assert (code, failures(outcomes)) == (0, {}), output[-3000:]
    assert outcomes["test_answers_follow_the_policy[freeuser1]"] is None  # decided, not skipped
    assert "test_answers_follow_the_policy[premiumuser1]" in outcomes


def test_a_request_through_a_spent_token_window_fails_naming_it(tokens: tuple[LocalStack, Path],
                                                                 tmp_path: Path) -> None:
    path = run(tokens, tmp_path / "runs", faults=["token-over-limit:premiumuser2"])
    code, outcomes, output = checks(path, tmp_path)
    failed = failures(outcomes)
    assert code == 1 and "test_answers_follow_the_policy[premiumuser2]" in failed, output[-3000:]
    assert "premiumuser2: request 4 (sent " in failed["test_answers_follow_the_policy[premiumuser2]"]
    assert "premium-tokens (50 per 60 s) was already full in every possible world" in failed[
        "test_answers_follow_the_policy[premiumuser2]"]
    assert not any("freeuser1" in name or "premiumuser1" in name for name in failed), failed
