"""Scenarios: which tiers and users send traffic, how it is paced and how much. Limits come from the Plan.

The built-in scenarios are data (scenarios/builtin.yaml) in the same format as a user's `--scenario-file`; they
name tiers by role (`every-tier`, `lowest-limit`, ...), so they run under any policy.
"""
from __future__ import annotations

from pathlib import Path

from .files import load_scenarios
from .model import (
    CREDENTIALS,
    ENDPOINTS,
    INVALID_CLASS,
    LOCUST_CONTROLS,
    MISSING,
    ROLES,
    UNKNOWN,
    Scenario,
    Slot,
    Stream,
    class_name,
    tier_role,
    tier_weights,
    valid_tiers,
)

__all__ = ["CREDENTIALS", "ENDPOINTS", "INVALID_CLASS", "LOCUST_CONTROLS", "MISSING", "ROLES", "SCENARIOS", "UNKNOWN",
           "Scenario", "Slot", "Stream", "add_scenario_files", "class_name", "scenario_named", "tier_role",
           "tier_weights", "valid_tiers"]

BUILTIN_FILE = Path(__file__).with_name("builtin.yaml")
SCENARIOS: dict[str, Scenario] = {s.name: s for s in load_scenarios(BUILTIN_FILE, source="built-in")}


def add_scenario_files(paths: list[str]) -> list[Scenario]:
    """Register the scenarios of these files (a later one replaces a scenario of the same name, saying so in its
    source); ValueError naming the file and field for bad input."""
    added = [s for path in paths for s in load_scenarios(Path(path))]
    SCENARIOS.update({s.name: s for s in added})
    return added


def scenario_named(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}: choose one of {', '.join(SCENARIOS)}") from None
