"""The suite in Locust: a user class per tier of the Plan, the scenarios, the ledger and the web UI tab, set up
when Locust imports this module. Your own locustfile gets all of it with

    from users.entry import *  # noqa: F403

(the project's locustfile.py is just that). The Plan is read from `--policy PATH` (repeatable; or `policy = ...` in
locust.conf, or $CHARGEBACK_POLICY), else deploy/kuadrant, through Locust's own parser at import: the user classes
come from it.
"""
from __future__ import annotations

import gc
import logging
import sys
from typing import Any

from locust import events
from locust.env import Environment

from chargeback.pytest_plugin import run_checks
from chargeback.record import COMPLETE
from users import webui
from users.base import TierUser
from users.options import add_options, plan_from_options
from users.run import GRACEFUL_STOP, Run, run_of
from users.shape import TierClasses, choose_scenario
from users.tiers import tier_user_classes

events.init_command_line_parser.add_listener(add_options)
PLAN = plan_from_options()
gc.set_threshold(10_000, 10, 10)  # fewer young-generation collections: the ledger's per-request cost stays small
GENERATED = tier_user_classes(PLAN)
globals().update({cls.__name__: cls for cls in GENERATED})
__all__ = ["PLAN", "TierUser", *(cls.__name__ for cls in GENERATED)]
log = logging.getLogger("chargeback")


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    for warning in PLAN.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    options = environment.parsed_options
    if not options.stop_timeout:  # let answers in flight arrive (and be accounted) when a run stops
        environment.stop_timeout = GRACEFUL_STOP  # (then as long as the slowest answers take: Run.on_test_stopping)
    run = Run.register(environment, PLAN)
    try:  # a scenario that names what the Plan lacks, or a bad option, stops before any run
        run.classes = TierClasses(environment.user_classes, environment.shape_class, list(PLAN.tiers),
                                  ", ".join(PLAN.sources))
        scenario = choose_scenario(environment, options.scenario)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if scenario is not None and options.headless and (options.run_time or options.num_users):
        log.warning("scenario %s decides the simulated users and when the run ends: -u, -r and -t are ignored "
                    "(--duration and --users-per-identity scale it)", scenario.name)
        options.run_time = None
    webui.register(environment, run)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    """Headless with --check: verify the record just written, if it is complete; the process exits with the checks'
    code (with the web UI, the tab verifies each run)."""
    options = environment.parsed_options
    run = run_of(environment)
    if (options is None or not options.check or not options.headless or run.record is None or run.is_worker
            or run.record.state != COMPLETE):
        return
    code = run_checks(run.record.path, auth=run.recorder.auth)
    if code:
        environment.process_exit_code = code
