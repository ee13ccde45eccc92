"""The suite's Locust options, and the Plan they name.

The tier user classes come from the Plan, and Locust wants its user classes when it imports the locustfile, before
it parses the command line. So the Plan is read at import from Locust's own parser (the same options, locust.conf
and environment variables Locust reads a moment later), once per process.
"""
from __future__ import annotations

import sys

from locust.argument_parser import LocustArgumentParser, get_parser

from chargeback.manifests import ManifestError
from chargeback.plan import DEFAULT_POLICY, Plan, load_plan
from scenarios import SCENARIOS


def add_options(parser: LocustArgumentParser) -> None:
    """Locust's init_command_line_parser listener."""
    scenarios = "; ".join(f"{s.name}: {s.description}" for s in SCENARIOS.values())
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="seed-demo",
                        help=f"what traffic to send: {scenarios}")
    parser.add_argument("--policy", action="append", include_in_web_ui=False, env_var="CHARGEBACK_POLICY",
                        help="Kuadrant manifest file or folder (repeatable; also `policy = ...` in locust.conf or "
                             "$CHARGEBACK_POLICY; default deploy/kuadrant)")
    parser.add_argument("--runs-dir", default="runs", include_in_web_ui=False,
                        help="where run records go (default runs)")
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
                        help="headless: run the checks on the run record at the end; exit with them")


def policy_of(argv: list[str] | None = None) -> list[str]:
    """The manifest paths Locust's parser gives for `argv` (default: this process's command line)."""
    return get_parser().parse_args(argv).policy or [DEFAULT_POLICY]


def plan_from_options(argv: list[str] | None = None) -> Plan:
    """The Plan of `--policy`; one line naming the file and field (exit 1) on bad manifests."""
    try:
        return load_plan(policy_of(argv))
    except ManifestError as exc:
        sys.exit(f"error: {exc}")
