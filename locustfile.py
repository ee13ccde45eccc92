"""Locust entry: a user class per tier of the Plan, the scenario shape, the ledger and the web UI tab.

    locust -f locustfile.py -H http://gateway                       # web UI: pick a scenario, press start
    locust -f locustfile.py --headless -H URL --scenario seed-demo  # CI: writes runs/<run-id>/

The Plan is read from `--policy PATH` (repeatable), else $CHARGEBACK_POLICY (paths joined by os.pathsep), else
deploy/kuadrant. It is read when Locust imports this file, because the user classes come from it.
"""
from __future__ import annotations

import gc
import os
import sys
from typing import Any

from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

from chargeback.manifests import ManifestError
from chargeback.plan import load_plan, policy_paths
from checks.runner import run_checks
from scenarios import SCENARIOS, scenario_named
from users import webui
from users.run import GRACEFUL_STOP, Run
from users.tiers import tier_user_classes


try:
    PLAN = load_plan(policy_paths(sys.argv, os.environ))
except ManifestError as exc:  # one line naming the file and field, not a traceback
    sys.exit(f"error: {exc}")
RUN = Run(PLAN)
gc.set_threshold(10_000, 10, 10)  # fewer young-generation collections: the ledger's per-request cost stays small
USER_CLASSES = tier_user_classes(PLAN, RUN)
globals().update({cls.__name__: cls for cls in USER_CLASSES})
_BY_TIER = {cls.tier: cls for cls in USER_CLASSES}


@events.init_command_line_parser.add_listener
def add_options(parser: LocustArgumentParser) -> None:
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="seed-demo",
                       help="what traffic to send: " + "; ".join(f"{s.name}: {s.description}" for s in SCENARIOS.values()))
    parser.add_argument("--policy", action="append", include_in_web_ui=False,
                       help="Kuadrant manifest file or folder (repeatable; default deploy/kuadrant)")
    parser.add_argument("--runs-dir", default="runs", include_in_web_ui=False, help="where run records go (default runs)")
    parser.add_argument("--prometheus-url", default="",
                        help="Prometheus scraping the gateway: its counters are snapshotted before and after the run")
    parser.add_argument("--job", default=None, include_in_web_ui=False,
                        help="the Prometheus scrape job of the gateway's Limitador (default: found by its series)")
    parser.add_argument("--metrics-url", default="", include_in_web_ui=False,
                        help="a Limitador-style /metrics URL to snapshot instead, when there is no Prometheus")
    parser.add_argument("--limitador-url", default="", include_in_web_ui=False,
                        help="Limitador's admin API (port 8080): the counters' state before the run is read there")
    parser.add_argument("--namespace", default=None, include_in_web_ui=False,
                        help="limitador_namespace of the gateway's route, <namespace>/<HTTPRoute> "
                             "(default: from the manifests' HTTPRoute, else found by the Plan's users' series)")
    parser.add_argument("--check", action="store_true", default=False, include_in_web_ui=False,
                        help="headless: run the checks (pytest checks/) on the run record at the end; exit with them")


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
    RUN.attach(environment)
    webui.install(environment, RUN)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    """With --check: verify the record just written, if it is complete; the process exits with the checks' code."""
    options = environment.parsed_options
    if options is None or not options.check or RUN.record is None or RUN.is_worker or RUN.record.state != "complete":
        return
    code = run_checks(RUN.record.path)
    if code:
        environment.process_exit_code = code


class ScenarioShape(LoadTestShape):
    """Runs the chosen scenario: one simulated user per slot, all at once; stops when the scenario is done (or
    a worker is lost, whose users can never finish)."""

    def tick(self) -> tuple[int, float, list] | None:
        if RUN.active and (RUN.finished() or RUN.lost_workers()):
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
