"""Scenarios against the Plan (slots, identities spread, clear errors) and the traffic patterns' pacing."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
from test_plan import DEPLOY, secret, write

from chargeback.plan import load_plan
from scenarios import INVALID_CLASS, MISSING, SCENARIOS, UNKNOWN, Scenario, Stream, scenario_named
from scenarios.patterns import BackToBack, Bursty, Poisson, Steady


def test_seed_demo_names_the_seed_users_and_no_numbers_the_policy_owns() -> None:
    slots = SCENARIOS["seed-demo"].slots(load_plan([DEPLOY]))
    assert [(s.user_class, s.account, s.stream.budget) for s in slots] == [
        ("premium", "premiumuser1", 8), ("free", "freeuser1", 5), ("premium", "premiumuser2", 6)]
    assert not hasattr(SCENARIOS["seed-demo"], "expected")  # the expected table comes from the window model


def test_tier_streams_spread_identities_evenly() -> None:
    plan = load_plan([DEPLOY])
    slots = SCENARIOS["saturation"].slots(plan)
    assert [s.account for s in slots] == [i.user for i in plan.identities] * 2
    realistic = SCENARIOS["realistic-hours"].slots(plan)
    assert [(s.user_class, s.account, s.stream.budget) for s in realistic] == [
        ("premium", "premiumuser1", 15), ("premium", "premiumuser2", 15),
        ("free", "freeuser1", 9), ("free", "freeuser2", 9)]


def test_bad_keys_use_the_plans_disallowed_identities(tmp_path: Path) -> None:
    write(tmp_path, "gold.yaml", secret("golduser", "gold"))
    slots = SCENARIOS["bad-keys"].slots(load_plan([DEPLOY, tmp_path]))
    assert [(s.user_class, s.account) for s in slots] == [
        (INVALID_CLASS, MISSING), (INVALID_CLASS, UNKNOWN), ("gold", "golduser")]
    assert [s.account for s in SCENARIOS["bad-keys"].slots(load_plan([DEPLOY]))] == [MISSING, UNKNOWN]


def test_a_scenario_naming_what_the_plan_lacks_fails_clearly() -> None:
    plan = load_plan([DEPLOY / "api-keys.yaml"])
    with pytest.raises(ValueError, match=rf"^scenario seed-demo names user premiumuser1, which the Plan \({DEPLOY}/auth-policy.yaml\) does not have$"):
        SCENARIOS["seed-demo"].slots(load_plan([DEPLOY / "auth-policy.yaml"]))
    with pytest.raises(ValueError, match=r"^scenario x names tier platinum, which the Plan .* tiers: free, premium, enterprise$"):
        Scenario("x", "", (Stream(tiers=("platinum",)),)).slots(plan)
    with pytest.raises(ValueError, match=r"^unknown scenario 'nope': choose one of seed-demo, realistic-hours, saturation, bad-keys$"):
        scenario_named("nope")


def delays(pattern, n: int, since_last_start: float = 0.0) -> list[float]:
    rng = random.Random(1)
    return [pattern.delay(i, since_last_start, rng) for i in range(n)]


def test_patterns() -> None:
    assert delays(BackToBack(), 3) == [0, 0, 0]
    assert delays(Steady(0.5), 3, since_last_start=0.2) == [0, 0.3, 0.3]
    assert delays(Steady(0.5), 2, since_last_start=0.9) == [0, 0]  # a slow answer: no wait, never negative
    assert delays(Bursty(3, 10.0), 7) == [0, 0, 0, 10.0, 0, 0, 10.0]
    gaps = delays(Poisson(20.0), 20001)[1:]
    assert delays(Poisson(20.0), 5) == delays(Poisson(20.0), 5)  # reproducible for a given seed
    assert 0.048 < sum(gaps) / len(gaps) < 0.052 and min(gaps) >= 0
