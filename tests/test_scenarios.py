"""Scenarios against the Plan (roles, slots, identities spread, clear errors), scenario files, the traffic
patterns' pacing and syntax, tier weights."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_plan import DEPLOY, ROOT, secret, write

from chargeback.plan import load_plan
from scenarios import (
    INVALID_CLASS,
    MISSING,
    SCENARIOS,
    UNKNOWN,
    Scenario,
    Stream,
    add_scenario_files,
    scenario_named,
    tier_weights,
    valid_tiers,
)
from scenarios.files import load_scenarios
from scenarios.patterns import BackToBack, Bursty, Poisson, Steady, parse_pattern

OTHER_TIERS = ROOT / "examples" / "policy"  # gold (30/min), silver (6/min), trial (3/min)


def accounts(scenario: str, policy: Path) -> list[tuple[str, str, int | None]]:
    return [(s.user_class, s.account, s.stream.budget) for s in SCENARIOS[scenario].slots(load_plan([policy]))]


def test_the_seed_demo_by_role_is_the_seeds_demo_under_the_demo_policy() -> None:
    assert accounts("seed-demo", DEPLOY) == [
        ("premium", "premiumuser1", 8), ("free", "freeuser1", 5), ("premium", "premiumuser2", 6)]
    assert not hasattr(SCENARIOS["seed-demo"], "expected")  # the expected table comes from the window model


def test_built_in_scenarios_name_roles_and_run_under_a_policy_with_other_tiers() -> None:
    assert valid_tiers(load_plan([DEPLOY])) == ["free", "premium", "enterprise"]
    assert valid_tiers(load_plan([OTHER_TIERS])) == ["trial", "silver", "gold"]
    assert accounts("seed-demo", OTHER_TIERS) == [("silver", "carol", 8), ("trial", "erin", 5), ("silver", "dave", 6)]
    assert accounts("realistic-hours", OTHER_TIERS) == [
        ("gold", "alice", 15), ("gold", "bob", 15), ("silver", "carol", 15), ("silver", "dave", 15),
        ("trial", "erin", 9)]
    assert accounts("chat-stream", OTHER_TIERS) == [("gold", "alice", 4), ("silver", "carol", 4), ("trial", "erin", 4)]
    assert accounts("soak", OTHER_TIERS) == [("gold", "alice", None), ("gold", "bob", None), ("silver", "carol", None),
                                             ("silver", "dave", None), ("trial", "erin", None)]
    soak = SCENARIOS["soak"]
    assert (soak.duration, [s.pattern.spec for s in soak.streams]) == (3600.0, ["steady:1/s", "bursty:5x30s"])
    assert soak.scaled(duration=600.0).duration == 600.0
    chat = SCENARIOS["chat-stream"].streams[0]
    assert (chat.endpoint, chat.stream, chat.path) == ("chat", True, "/v1/chat/completions")
    builtin = (ROOT / "scenarios" / "builtin.yaml").read_text()
    assert not any(name in builtin for name in ("free", "premium", "enterprise", "user1"))


def test_tier_streams_spread_identities_evenly() -> None:
    plan = load_plan([DEPLOY])
    assert [s.account for s in SCENARIOS["saturation"].slots(plan)] == [i.user for i in plan.identities] * 2
    assert accounts("realistic-hours", DEPLOY) == [
        ("premium", "premiumuser1", 15), ("premium", "premiumuser2", 15), ("enterprise", "enterpriseuser1", 15),
        ("free", "freeuser1", 9), ("free", "freeuser2", 9)]


def test_scaled_scenarios() -> None:
    saturation = SCENARIOS["saturation"].scaled(duration=30.0, per_identity=3)
    assert (saturation.duration, len(saturation.slots(load_plan([DEPLOY])))) == (30.0, 15)
    assert SCENARIOS["seed-demo"].scaled(duration=30.0).duration is None  # budgets decide its end


def test_bad_keys_use_the_plans_disallowed_identities(tmp_path: Path) -> None:
    write(tmp_path, "gold.yaml", secret("golduser", "gold"))
    slots = SCENARIOS["bad-keys"].slots(load_plan([DEPLOY, tmp_path]))
    assert [(s.user_class, s.account) for s in slots] == [
        (INVALID_CLASS, MISSING), (INVALID_CLASS, UNKNOWN), ("gold", "golduser")]
    assert [s.account for s in SCENARIOS["bad-keys"].slots(load_plan([DEPLOY]))] == [MISSING, UNKNOWN]


def test_a_scenario_naming_what_the_plan_lacks_fails_clearly() -> None:
    plan = load_plan([DEPLOY / "api-keys.yaml"])
    with pytest.raises(ValueError, match=rf"^scenario seed-demo sends nothing under the Plan \({DEPLOY}/auth-policy.yaml\): no identity matches its streams$"):
        SCENARIOS["seed-demo"].slots(load_plan([DEPLOY / "auth-policy.yaml"]))
    with pytest.raises(ValueError, match=r"^scenario x names tier platinum, which the Plan .* tiers: free, premium, enterprise$"):
        Scenario("x", "", (Stream(tiers=("platinum",)),)).slots(plan)
    with pytest.raises(ValueError, match=r"^scenario x names user nobody, which the Plan .* does not have$"):
        Scenario("x", "", (Stream(users=("nobody",)),)).slots(plan)
    with pytest.raises(ValueError, match=r"^unknown scenario 'nope': choose one of seed-demo, realistic-hours, saturation, bad-keys, chat-stream, soak"):
        scenario_named("nope")


SCENARIO_FILE = """\
scenarios:
  - name: chat-burst
    description: silver users chat in bursts
    streams:
      - tiers: [silver]
        pattern: bursty:2x5s
        requests: 4
        rounds: 2
        round_gap: 1m
        endpoint: chat
        stream: true
        max_tokens: 8
      - {users: [erin], requests: 1, prompt: hi}
  - name: timed
    duration: 90s
    streams: [{tiers: highest-limit, per_identity: 2, pattern: "poisson:3/s"}]
"""


def test_a_scenario_file_declares_scenarios_in_the_built_ins_format(tmp_path: Path) -> None:
    path = write(tmp_path, "mine.yaml", SCENARIO_FILE)
    burst, timed = load_scenarios(path)
    assert (burst.name, burst.description, burst.duration, burst.source) == (
        "chat-burst", "silver users chat in bursts", None, str(path))
    assert burst.streams[0] == Stream(tiers=("silver",), pattern=Bursty(2, 5.0), requests=4, rounds=2,
                                      round_gap=60.0, endpoint="chat", stream=True, max_tokens=8)
    assert [(s.account, s.stream.budget) for s in burst.slots(load_plan([OTHER_TIERS]))] == [
        ("carol", 8), ("dave", 8), ("erin", 1)]
    assert (timed.duration, [s.account for s in timed.slots(load_plan([OTHER_TIERS]))]) == (90.0, ["alice", "bob"] * 2)
    try:
        assert add_scenario_files([str(path)]) == [burst, timed] and scenario_named("timed") == timed
    finally:
        del SCENARIOS["chat-burst"], SCENARIOS["timed"]


@pytest.mark.parametrize("text, error", [
    ("scenarios: []", "scenarios: expected a list of scenarios"),
    ("scenarios: [{name: 'a b', streams: [{tiers: [x], requests: 1}]}]",
     "scenarios[0].name: expected a name of letters, digits, '.', '_' or '-', got 'a b'"),
    ("scenarios: [{name: a, streams: [{tiers: [x], requests: 1, colour: red}]}]",
     "scenarios[0].streams[0].colour: unknown field; fields: users, tiers, pick, credential"),
    ("scenarios: [{name: a, streams: [{tiers: [x], requests: 1, pattern: 'steddy:2/s'}]}]",
     "scenarios[0].streams[0].pattern: 'steddy:2/s' is not a pattern (steady:N/s | bursty:NxDURATION | poisson:N/s | none)"),
    ("scenarios: [{name: a, streams: [{tiers: [x]}]}]",
     "scenarios[0].streams[0].requests: needed when the scenario has no duration (else it never ends)"),
    ("scenarios: [{name: a, streams: [{requests: 2}]}]", "scenarios[0].streams[0]: a stream of valid keys needs users or tiers"),
    ("scenarios: [{name: a, streams: [{tiers: [x], requests: 0}]}]",
     "scenarios[0].streams[0].requests: expected a whole number >= 1, got 0"),
    ("scenarios: [{name: a, streams: [{credential: stolen, requests: 1}]}]",
     "scenarios[0].streams[0].credential: expected one of valid, missing, unknown, disallowed, got 'stolen'"),
    ("scenarios: [{name: a, streams: [{tiers: [x], requests: 1, endpoint: embeddings}]}]",
     "scenarios[0].streams[0].endpoint: expected one of completions, chat, got 'embeddings'"),
    ("scenarios: [{name: a, duration: soon, streams: [{tiers: [x]}]}]",
     "scenarios[0].duration: 'soon' is not a duration like 30s, 2m or 1h"),
    ("scenarios: [{name: a, streams: [{tiers: [x], requests: 1, stream: yes please}]}]",
     "scenarios[0].streams[0].stream: expected true or false, got 'yes please'"),
    ("scenarios:\n  - name: a\n    streams: [{tiers: [x], requests: 1}]\n  - name: a\n    streams: [{tiers: [x], requests: 1}]",
     "scenarios[1].name: 'a' is declared twice"),
    ("scenarios: [{name: a, streams: [", "YAML error"),
])
def test_a_bad_scenario_file_gets_one_line_naming_the_file_and_field(tmp_path: Path, text: str, error: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ValueError) as caught:
        load_scenarios(path)
    message = str(caught.value)
    assert message.startswith(f"{path}") and error in message and "\n" not in message, message


def test_a_missing_scenario_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{tmp_path}/nope.yaml: cannot read: No such file or directory$"):
        load_scenarios(tmp_path / "nope.yaml")


def delays(pattern, n: int, since_last_start: float = 0.0) -> list[float]:
    rng = random.Random(1)
    return [pattern.delay(i, since_last_start, rng) for i in range(n)]


def test_patterns() -> None:
    assert delays(BackToBack(), 3) == [0, 0, 0]
    assert delays(Steady(2.0), 3, since_last_start=0.2) == [0, 0.3, 0.3]
    assert delays(Steady(2.0), 2, since_last_start=0.9) == [0, 0]  # a slow answer: no wait, never negative
    assert delays(Bursty(3, 10.0), 7) == [0, 0, 0, 10.0, 0, 0, 10.0]
    gaps = delays(Poisson(20.0), 20001)[1:]
    assert delays(Poisson(20.0), 5) == delays(Poisson(20.0), 5)  # reproducible for a given seed
    assert 0.048 < sum(gaps) / len(gaps) < 0.052 and min(gaps) >= 0


def test_pattern_syntax() -> None:
    assert [parse_pattern(t) for t in ("steady:2/s", "bursty:5x10s", "poisson:3.5/s", "none")] == [
        Steady(2.0), Bursty(5, 10.0), Poisson(3.5), BackToBack()]
    assert [p.spec for p in (Steady(2.0), Bursty(5, 10.0), Poisson(3.5), BackToBack())] == [
        "steady:2/s", "bursty:5x10s", "poisson:3.5/s", "none"]
    for bad in ("steady:0/s", "steady:2", "bursty:5x", "bursty:0x1s", "poisson:-1/s", "fast"):
        with pytest.raises(ValueError, match=rf"^'{bad}' is not a pattern \(steady:N/s \| bursty:NxDURATION"):
            parse_pattern(bad)


def test_tier_weights() -> None:
    tiers = ["free", "premium", "enterprise"]
    assert tier_weights("", tiers) == {"free": 1, "premium": 1, "enterprise": 1}
    assert tier_weights("premium=3, free=1", tiers) == {"free": 1, "premium": 3, "enterprise": 0}
    with pytest.raises(ValueError, match=r"^--tier-weights: 'gold' is not a tier of the Plan; tiers: free, premium, enterprise$"):
        tier_weights("gold=1", tiers)
    with pytest.raises(ValueError, match=r"^--tier-weights: 'free=x': expected tier=N, N a whole number$"):
        tier_weights("free=x", tiers)
    with pytest.raises(ValueError, match=r"^--tier-weights: 'free=0' gives every tier weight 0$"):
        tier_weights("free=0", tiers)
