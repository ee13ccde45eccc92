"""The suite's Locust options; the Plan, scenario and traffic they name.

The tier user classes come from the Plan, and Locust wants its user classes when it imports the locustfile, before
it parses the command line. So the Plan (and the scenario files) are read at import from Locust's own parser (the
same options, locust.conf and environment variables Locust reads a moment later), once per process.
"""
from __future__ import annotations

import sys
from typing import Any

from locust.argument_parser import LocustArgumentParser, get_parser

from chargeback.plan import DEFAULT_POLICY, Plan, load_plan, parse_window
from chargeback.prometheus import PROMETHEUS_AUTH_OPTIONS, PrometheusAuth
from scenarios import LOCUST_CONTROLS, SCENARIOS, Scenario, Stream, add_scenario_files, scenario_named
from scenarios.patterns import PATTERN_SYNTAX, parse_pattern


def add_options(parser: LocustArgumentParser) -> None:
    """Locust's init_command_line_parser listener."""
    parser.add_argument("--scenario", default=LOCUST_CONTROLS,
                        help=f"a named scenario ({', '.join(SCENARIOS)}, or one of a --scenario-file); without it, "
                             "Locust's controls (-u, -r, -t, a LoadTestShape) drive the tier users")
    parser.add_argument("--scenario-file", action="append", include_in_web_ui=False,
                        help="YAML file of your own scenarios (repeatable; the format of scenarios/builtin.yaml)")
    parser.add_argument("--tier-weights", default="",
                        help="Locust's controls: simulated users per tier, e.g. premium=3,free=1 (tiers not named get "
                             "none; default: every tier alike)")
    parser.add_argument("--pattern", default="steady:1/s",
                        help=f"Locust's controls: each simulated user's pacing, {PATTERN_SYNTAX} (default steady:1/s)")
    parser.add_argument("--duration", default="",
                        help="a scenario that runs for a time (saturation): run this long instead, e.g. 30s or 2m")
    parser.add_argument("--users-per-identity", type=int, default=0,
                        help="a scenario: this many simulated users share each identity instead")
    parser.add_argument("--policy", action="append", include_in_web_ui=False, env_var="CHARGEBACK_POLICY",
                        help="Kuadrant manifest file or folder (repeatable; also `policy = ...` in locust.conf or "
                             "$CHARGEBACK_POLICY; default deploy/kuadrant)")
    parser.add_argument("--runs-dir", default="runs", include_in_web_ui=False,
                        help="where run records go (default runs)")
    parser.add_argument("--prometheus-url", default="",
                        help="Prometheus scraping the gateway: its counters are snapshotted before and after the run")
    for name, kwargs in PROMETHEUS_AUTH_OPTIONS:
        parser.add_argument(name, include_in_web_ui=False, **kwargs)
    parser.add_argument("--job", default=None, include_in_web_ui=False,
                        help="the Prometheus scrape job of the gateway's Limitador (default: found by its series)")
    parser.add_argument("--metrics-url", default="", include_in_web_ui=False,
                        help="a Limitador-style /metrics URL to snapshot instead, when there is no Prometheus")
    parser.add_argument("--limitador-url", default="", include_in_web_ui=False,
                        help="Limitador's admin API (port 8080): the counters' state before the run is read there")
    parser.add_argument("--namespace", default=None, include_in_web_ui=False,
                        help="limitador_namespace of the gateway's route, <namespace>/<HTTPRoute> "
                             "(default: from the manifests' HTTPRoute, else found by the Plan's users' series)")
    parser.add_argument("--strict-limits", action="store_true", default=False, include_in_web_ui=False,
                        help="the checks fail any overshoot of a limit, even one the requests in flight at once "
                             "explain (Limitador's check-then-update race); kept in the run record")
    parser.add_argument("--check", action="store_true", default=False, include_in_web_ui=False,
                        help="headless: run the checks on the run record at the end; exit with them")


def prometheus_auth(options: Any) -> PrometheusAuth:
    """The token (--prometheus-token, else --prometheus-token-file, else $PROMETHEUS_TOKEN), CA and TLS choice for
    Prometheus; ValueError (one line naming the file) when they cannot be read."""
    return PrometheusAuth.resolve(options.prometheus_token, options.prometheus_token_file, options.prometheus_ca,
                                  options.insecure)


def policy_of(argv: list[str] | None = None) -> list[str]:
    """The manifest paths Locust's parser gives for `argv` (default: this process's command line)."""
    return get_parser().parse_args(argv).policy or [DEFAULT_POLICY]


def plan_from_options(argv: list[str] | None = None) -> Plan:
    """The Plan of `--policy`, with the scenarios of `--scenario-file` registered; one line naming the file and
    field (exit 1) on bad input."""
    options = get_parser().parse_args(argv)
    try:
        add_scenario_files(options.scenario_file or [])
        return load_plan(options.policy or [DEFAULT_POLICY])
    except ValueError as exc:  # ManifestError, ScenarioFileError
        sys.exit(f"error: {exc}")


def scenario_of(options: Any) -> Scenario | None:
    """The scenario the options name, scaled by --duration and --users-per-identity; None for Locust's controls.
    ValueError (one line) for an unknown name or a bad value."""
    if not options.scenario:
        return None
    scenario = scenario_named(options.scenario)
    try:
        duration = parse_window(options.duration) if options.duration else None
    except ValueError as exc:
        raise ValueError(f"--duration: {exc}") from None
    if options.users_per_identity < 0:
        raise ValueError(f"--users-per-identity: expected a whole number >= 1, got {options.users_per_identity}")
    return scenario.scaled(duration, options.users_per_identity or None)


def endless_stream(options: Any) -> Stream:
    """With Locust's controls: what every simulated user sends (its pacing from --pattern)."""
    try:
        return Stream(pattern=parse_pattern(options.pattern))
    except ValueError as exc:
        raise ValueError(f"--pattern: {exc}") from None
