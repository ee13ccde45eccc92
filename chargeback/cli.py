"""The command line: `python -m chargeback stack up ...` and `python -m chargeback demo`."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from .demo import run_demo
from .limits import main_limits
from .manifests import ManifestError
from .plan import DEFAULT_POLICY, load_plan, parse_window
from .prometheus import PROMETHEUS_AUTH_OPTIONS, MetricsSourceError, PrometheusAuth
from .record import RecordError
from .rules import main_rules
from .schema import SCHEMAS
from .verify import VerifyError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargeback",
                                     description="Load-test and verify Kuadrant rate limits and chargeback metrics.")
    commands = parser.add_subparsers(dest="command", required=True)
    stack = commands.add_parser("stack", help="the local stand-in for a cluster")
    stack_commands = stack.add_subparsers(dest="stack_command", required=True)
    up = stack_commands.add_parser("up", help="start gateway + model simulator + Prometheus until Ctrl-C")
    up.add_argument("--policy", action="append", metavar="PATH",
                    help="Kuadrant manifest file or folder (repeatable; default deploy/kuadrant)")
    up.add_argument("--schema", default="seed", choices=sorted(SCHEMAS),
                    help="metric names the gateway serves (default seed): " +
                         "; ".join(f"{s.name}: {s.description}" for s in SCHEMAS.values()))
    up.add_argument("--gateway-port", type=int, default=8000, help="0 picks a free port (default 8000)")
    up.add_argument("--prometheus-port", type=int, default=9090, help="0 picks a free port (default 9090)")
    up.add_argument("--namespace", help="limitador_namespace label (default llm/vllm-httproute)")
    up.add_argument("--ttft", type=float, default=0.0, help="model time to first token, seconds")
    up.add_argument("--per-token", type=float, default=0.0, help="model time per completion token, seconds")
    up.add_argument("--fault", action="append", default=[], metavar="KIND[:ARG]",
                    help="make the gateway miscount, to see the checks fail: over-limit[:USER], "
                         "token-over-limit[:USER], drop-authorized[:USER], double-count[:USER], drop-tokens[:USER], "
                         "model-429[:USER], auth-uncounted[:USER], early-reset[:USER], fail-open[:USER], "
                         "headers-stale[:USER], mislabel:USER=GROUP, no-group, reset-after:N, forget-after:N")
    up.add_argument("--rate-limit-headers", action="store_true",
                    help="serve X-RateLimit-Limit/Remaining/Reset, as Limitador with "
                         "rateLimitHeaders: DRAFT_VERSION_03")
    up.add_argument("--overshoot", type=float, nargs="?", const=0.05, default=0.0, metavar="SECONDS",
                    help="Limitador's check-then-update race: the limiter reads, then updates SECONDS later "
                         "(default 0.05), so concurrent requests of one counter can all pass and overshoot a limit")
    up.add_argument("--replicas", type=int, default=1, metavar="N",
                    help="limiter replicas, each a Prometheus target with its admin API on its own port (default 1)")
    up.add_argument("--replica-storage", default="shared", choices=("shared", "separate"),
                    help="shared: one set of counters for all replicas; separate: each its own (default shared)")
    demo = commands.add_parser("demo", help="the seed's traffic on the local stand-in, verified in Prometheus")
    demo.add_argument("--policy", action="append", metavar="PATH",
                      help="Kuadrant manifest file or folder (repeatable; default deploy/kuadrant)")
    demo.add_argument("--schema", default="seed", choices=sorted(SCHEMAS), help="metric names (default seed)")
    report = commands.add_parser("report", help="chargeback report (CSV, JSON, HTML) of a run, or from Prometheus")
    report.add_argument("run", nargs="?", help="a run record folder (runs/<id> or runs/latest)")
    report.add_argument("--out", help="output folder (default: <run>/report, or reports/<time> for --since)")
    report.add_argument("--price", action="append", default=[], metavar="TIER=USD",
                        help="price per authorized call, overriding the Plan's (repeatable)")
    report.add_argument("--token-price", action="append", default=[], metavar="TIER=USD",
                        help="price per 1000 tokens, overriding the Plan's (repeatable)")
    report.add_argument("--input-token-price", action="append", default=[], metavar="TIER=USD",
                        help="price per 1000 input (prompt) tokens, overriding the Plan's (repeatable)")
    report.add_argument("--output-token-price", action="append", default=[], metavar="TIER=USD",
                        help="price per 1000 output (completion) tokens, overriding the Plan's (repeatable)")
    report.add_argument("--prometheus-url", help="Prometheus: with --since, the report of a time range")
    report.add_argument("--since", help="with --prometheus-url: the range, e.g. 24h, 30m")
    report.add_argument("--policy", action="append", metavar="PATH",
                        help="with --since: manifests giving tiers and prices (default deploy/kuadrant)")
    report.add_argument("--schema", choices=sorted(SCHEMAS), help="metric names (default: detected)")
    report.add_argument("--job", help="Prometheus scrape job of the gateway's metrics (default: any)")
    for name, kwargs in PROMETHEUS_AUTH_OPTIONS:
        report.add_argument(name, **kwargs)
    rules = commands.add_parser("rules", help="Prometheus recording rules for chargeback, from the manifests")
    rules.add_argument("--schema", required=True, choices=sorted(SCHEMAS), help="metric names the rules read")
    rules.add_argument("--policy", action="append", metavar="PATH",
                       help="Kuadrant manifest file or folder (repeatable; default deploy/kuadrant)")
    rules.add_argument("--out", metavar="FILE", help="write the rule file here (default: standard output)")
    limits = commands.add_parser("limits", help="the Limitador limits the manifests compile to, as a limits file")
    limits.add_argument("--policy", action="append", metavar="PATH",
                        help="Kuadrant manifest file or folder (repeatable; default deploy/kuadrant)")
    limits.add_argument("--namespace", help="limitador_namespace of policies that reach no HTTPRoute of the manifests "
                                            "(default: the one HTTPRoute's, else llm/vllm-httproute)")
    limits.add_argument("--limitador-url", help="compare with Limitador's GET /limits/{ns} instead (exit 1 if differs)")
    return parser


def _report(args: argparse.Namespace) -> int:
    from .report import from_prometheus, from_run, parse_prices
    from .report_files import write_all

    per_call, per_1k = parse_prices(args.price, "price"), parse_prices(args.token_price, "token-price")
    overrides = {"per_1k_input_tokens": parse_prices(args.input_token_price, "input-token-price"),
                 "per_1k_output_tokens": parse_prices(args.output_token_price, "output-token-price")}
    auth = PrometheusAuth.resolve(args.prometheus_token, args.prometheus_token_file, args.prometheus_ca, args.insecure)
    if args.run:
        report = from_run(args.run, per_call, per_1k, args.prometheus_url, auth, overrides)
        out = Path(args.out or Path(args.run) / "report")
    elif args.prometheus_url and args.since:
        plan = load_plan(args.policy or [DEFAULT_POLICY])
        report = from_prometheus(args.prometheus_url, parse_window(args.since), plan, per_call, per_1k,
                                 args.schema, args.job, auth=auth, overrides=overrides)
        out = Path(args.out or Path("reports") / time.strftime("%Y%m%d-%H%M%S"))
    else:
        raise ValueError("report needs a run folder, or --prometheus-url with --since (e.g. --since 24h)")
    for path in write_all(report, out):
        print(path)
    for flag in report.flags:
        print(f"warning: {flag}", file=sys.stderr)
    return 0


def _stack_up(args: argparse.Namespace) -> int:
    from sim.prometheus import port_in_use
    from sim.stack import LocalStack  # only the local-stack commands start the sim

    policies = args.policy or [DEFAULT_POLICY]
    plan = load_plan(policies)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for flag, port in (("--gateway-port", args.gateway_port), ("--prometheus-port", args.prometheus_port)):
        if port and port_in_use(port):
            raise ValueError(f"port {port} on 127.0.0.1 is in use ({flag})")
    if args.replicas < 1:
        raise ValueError(f"--replicas {args.replicas}: expected 1 or more")
    stack = LocalStack(policies, args.schema, args.gateway_port, args.prometheus_port, args.namespace,
                       args.ttft, args.per_token, faults=args.fault, replicas=args.replicas,
                       replica_storage=args.replica_storage, rate_limit_headers=args.rate_limit_headers,
                       overshoot=args.overshoot)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    print(f"starting: {len(plan.identities)} identities, {len(plan.limits)} limits, schema {args.schema} ...",
          flush=True)
    with stack:
        print(f"gateway     {stack.gateway_url}  (OpenAI API; Limitador /metrics /limits /counters /status; "
              "Authorino /server-metrics)")
        for i, url in enumerate(stack.replica_urls[1:], 1):
            print(f"replica {i:<3} {url}  (Limitador /metrics /limits /counters /status; "
                  f"{args.replica_storage} storage)")
        print(f"prometheus  {stack.prometheus_url}  (scrapes the gateway every second)")
        print("ready; Ctrl-C stops everything", flush=True)
        while not stopping.wait(0.5):
            exited = stack.exited()
            if exited is not None:
                print(f"error: {exited.name} exited with code {exited.returncode}; log: {exited.log_tail()}",
                      file=sys.stderr, flush=True)
                return 1
    print("stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "stack":
            return _stack_up(args)
        if args.command == "demo":
            return run_demo(args.policy or [DEFAULT_POLICY], args.schema)
        if args.command == "report":
            return _report(args)
        if args.command == "rules":
            return main_rules(args)
        if args.command == "limits":
            return main_limits(args)
    except (ManifestError, MetricsSourceError, RecordError, VerifyError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
