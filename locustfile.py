"""Locust entry: a user class per tier of the Plan, the scenario shape, the ledger and the web UI tab.

    locust -f locustfile.py -H http://gateway                       # web UI: pick a scenario, press start
    locust -f locustfile.py --headless -H URL --scenario seed-demo  # CI: writes runs/<run-id>/

The Plan is read from `--policy PATH` (repeatable; or `policy = ...` in locust.conf, or $CHARGEBACK_POLICY), else
deploy/kuadrant, through Locust's own parser when Locust imports this file: the user classes come from it.
"""
from __future__ import annotations

import gc
import sys
from typing import Any

from locust import LoadTestShape, events
from locust.env import Environment

from chargeback.pytest_plugin import run_checks
from chargeback.record import COMPLETE
from scenarios import scenario_named
from users import webui
from users.options import add_options, plan_from_options
from users.run import GRACEFUL_STOP, Run, run_of
from users.tiers import tier_user_classes

events.init_command_line_parser.add_listener(add_options)
PLAN = plan_from_options()
gc.set_threshold(10_000, 10, 10)  # fewer young-generation collections: the ledger's per-request cost stays small
USER_CLASSES = tier_user_classes(PLAN)
globals().update({cls.__name__: cls for cls in USER_CLASSES})
_BY_TIER = {cls.tier: cls for cls in USER_CLASSES}


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    for warning in PLAN.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    options = environment.parsed_options
    if not options.stop_timeout:  # let answers in flight arrive (and be accounted) when a run stops
        environment.stop_timeout = GRACEFUL_STOP  # (then as long as the slowest answers take: Run.on_test_stopping)
    try:  # a scenario that names what the Plan lacks stops the run before it starts
        scenario_named(options.scenario).slots(PLAN)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    webui.register(environment, Run.register(environment, PLAN))


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    """With --check: verify the record just written, if it is complete; the process exits with the checks' code."""
    options = environment.parsed_options
    run = run_of(environment)
    if options is None or not options.check or run.record is None or run.is_worker or run.record.state != COMPLETE:
        return
    code = run_checks(run.record.path)
    if code:
        environment.process_exit_code = code


class ScenarioShape(LoadTestShape):
    """Runs the chosen scenario: one simulated user per slot, all at once; stops when the scenario is done (or
    a worker is lost, whose users can never finish)."""

    def tick(self) -> tuple[int, float, list] | None:
        run = run_of(self.runner.environment) if self.runner else None
        if run is not None and run.active and (run.finished() or run.lost_workers()):
            return None
        options = self.runner.environment.parsed_options if self.runner else None
        slots = scenario_named(options.scenario if options else "seed-demo").slots(PLAN)
        counts: dict[str, int] = {}
        for slot in slots:
            counts[slot.user_class] = counts.get(slot.user_class, 0) + 1
        classes = [_BY_TIER[tier] for tier in counts]
        for cls in classes:
            cls.fixed_count = counts[cls.tier]
        return len(slots), max(len(slots), 1), classes
