"""The stand-in gateway: Authorino (API keys, groups) then Limitador (fixed windows) in front of the model simulator.

Serves the OpenAI routes through auth and limits, and Limitador's admin routes (`/metrics`, `/status`,
`/limits/{ns}`, `/counters/{ns}`, the namespace URL-encoded) and Authorino's `/server-metrics` on the same port; each
further limiter replica serves its own admin routes on its own port.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson
import uvicorn
import uvloop

from chargeback.expressions import CelExpression, ExpressionError
from chargeback.limits import compiled_limit, limit_identifier
from chargeback.manifests import ManifestError
from chargeback.plan import DEFAULT_NAMESPACE, Identity, Limit, Plan, load_plan
from chargeback.schema import DEFAULT_SCHEMA, MODEL_LABEL, SCHEMAS, MetricSchema, schema_named

from .asgi import Headers, Receive, Send, read_body, respond, serve_lifespan
from .faults import SYNTAX, Faults
from .limiter import CounterSpec, CounterState, Limiter
from .metrics import AuthorinoMetrics, LimitadorMetrics
from .model import ModelConfig, ModelSimulator, rate_limit_error

JSON = "application/json"
ADMIN_PREFIXES = ("/limits/", "/counters/")
TOO_MANY_REQUESTS = b"Too Many Requests\n"  # the wasm-shim's 429 body
STORAGES = ("shared", "separate")
OVERSHOOT = 0.05  # seconds between reading and updating the counters with --overshoot
AUTHORINO_NAMESPACE = "kuadrant-system"  # where kuadrant-operator puts the AuthConfigs it generates
ASGIApp = Callable[[dict[str, Any], Receive, Send], Any]


def rfc3339(t: float) -> str:
    """Epoch seconds as an RFC 3339 UTC time, e.g. 2026-11-26T19:31:37.123456Z."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Replica:
    """One Limitador replica: its limiter (one shared by all replicas, or its own), its own metrics, its start."""

    limiter: Limiter
    metrics: LimitadorMetrics
    started_at: str = field(default_factory=lambda: rfc3339(time.time()))


@dataclass(frozen=True)
class _Principal:
    """What the gateway precomputes for one API key."""

    identity: Identity
    request_specs: tuple[CounterSpec, ...]
    token_specs: tuple[CounterSpec, ...]
    per_request_limits: tuple[Limit, ...]
    labels: tuple[str, ...]  # metric label values after the namespace (the model is added per request if labelled)


def _specs(limit: Limit, values: tuple[str, ...]) -> list[CounterSpec]:
    hits = 1 if limit.kind == "requests" else 0
    name = limit_identifier(limit)
    return [CounterSpec(name, i, values, rate.limit, rate.window, hits) for i, rate in enumerate(limit.rates)]


def _label_value(expression: CelExpression, identity: Identity) -> str:
    """A TelemetryPolicy label for one identity; empty (so Prometheus drops the label) when it cannot be built."""
    try:
        return str(expression.evaluate(identity.auth))
    except ExpressionError:
        return ""


class Gateway:
    """A raw ASGI app enforcing a Plan the way Authorino and Limitador would.

    `replicas` limiter replicas take the requests that reach the limiter in turn (round-robin); with
    `replica_storage` "shared" they count in one limiter, with "separate" each in its own. Each replica has its own
    metrics; this app serves replica 0's admin routes, `admin_app(i)` replica i's.
    """

    def __init__(self, plan: Plan, schema: MetricSchema, namespace: str | None = None,
                 model: ModelSimulator | None = None, clock: Callable[[], float] = time.monotonic,
                 faults: Faults | None = None, replicas: int = 1, replica_storage: str = "shared",
                 rate_limit_headers: bool = False, overshoot: float = 0.0):
        if plan.auth is None:
            raise ManifestError(f"{', '.join(plan.sources)}: no AuthPolicy with apiKey authentication")
        if replica_storage not in STORAGES or replicas < 1:
            raise ValueError(f"replicas: {replicas} with {replica_storage!r} storage; expected >= 1 with one of "
                             f"{', '.join(STORAGES)}")
        self.plan = plan
        self.namespace = namespace or plan.limitador_namespace or DEFAULT_NAMESPACE
        self.model = model or ModelSimulator()
        self._reached = 0  # requests that reached the limiter (for reset-after and forget-after)
        self._turn = 0  # the next request's replica, round-robin
        self._header = plan.auth.header.encode()
        self._realm = f'{plan.auth.prefix or "APIKEY"} realm="{plan.auth.policy}"'.encode()
        self.faults = faults if faults is not None else Faults()
        self.rate_limit_headers = rate_limit_headers  # Limitador's rateLimitHeaders: DRAFT_VERSION_03
        self.overshoot = overshoot  # seconds between a check's reading and its update (0: one atomic step)
        self._limit_names = {limit_identifier(limit): limit.name for limit in plan.limits}
        self._group_label = schema.group_label
        self._label_names, self._label_exprs = self._labels(schema)
        self._model_label = schema.model_label
        label_names = self._label_names + ((MODEL_LABEL,) if self._model_label else ())
        # TelemetryPolicy labels read from the response body reach Limitador with the Report: token metrics only
        self._response_labels = dict(plan.response_labels) if schema.telemetry_labels else {}
        shared = Limiter(clock)
        self.replicas = [Replica(shared if replica_storage == "shared" or i == 0 else Limiter(clock),
                                 LimitadorMetrics(schema, self.namespace, label_names, tuple(self._response_labels)))
                         for i in range(replicas)]
        self._compiled = {(limit_identifier(limit), i): compiled_limit(limit, rate, self.namespace)
                          for limit in plan.limits for i, rate in enumerate(limit.rates)}
        self.config_version = hashlib.sha256(orjson.dumps(list(self._compiled.values()))).hexdigest()[:16]
        self._principals = {
            plan.auth.header_value(i.key).encode(): self._principal(i) for i in plan.identities if i.known
        }
        # kuadrant-operator names an AuthConfig by a sha256 hash of the route's path through the topology
        self.authorino = AuthorinoMetrics(AUTHORINO_NAMESPACE, hashlib.sha256(self.namespace.encode()).hexdigest())

    def _labels(self, schema: MetricSchema) -> tuple[tuple[str, ...], dict[str, CelExpression]]:
        if schema.telemetry_labels and self.plan.telemetry_labels:
            return tuple(self.plan.telemetry_labels), dict(self.plan.telemetry_labels)
        if not schema.labels_group or self.faults.no_group:
            return (schema.user_label,), {}
        return (schema.user_label, schema.group_label), {}

    def _principal(self, identity: Identity) -> _Principal:
        request_specs: list[CounterSpec] = []
        token_specs: list[CounterSpec] = []
        for limit in self.plan.limits_for(identity):
            try:
                values = limit.counter_values(identity.auth)
            except ExpressionError:
                continue  # the Plan warned about it; Kuadrant skips a limit whose counter cannot be built
            (request_specs if limit.kind == "requests" else token_specs).extend(_specs(limit, values))
        if self._label_exprs:
            labels = tuple(_label_value(e, identity) for e in self._label_exprs.values())
        else:
            labels = (identity.user, identity.group_label)[: len(self._label_names)]
        group = self.faults.mislabel.get(identity.user)
        if group is not None and self._group_label in self._label_names:
            at = self._label_names.index(self._group_label)
            labels = labels[:at] + (group,) + labels[at + 1:]
        return _Principal(identity, tuple(request_specs), tuple(token_specs),
                          tuple(l for l in self.plan.limits if l.per_request), labels)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
        elif scope["type"] == "http":
            path = scope["path"]
            if path == "/metrics" or path == "/status" or path.startswith(ADMIN_PREFIXES):
                await self._admin(self.replicas[0], scope, send)
            elif path == "/server-metrics":
                await respond(send, 200, "text/plain; version=0.0.4; charset=utf-8", self.authorino.render())
            else:
                await self._route(scope, receive, send)

    def admin_app(self, index: int) -> ASGIApp:
        """An ASGI app serving replica `index`'s admin routes only (404 for anything else)."""
        replica = self.replicas[index]

        async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
            if scope["type"] == "lifespan":
                await serve_lifespan(receive, send)
            elif scope["type"] == "http":
                await self._admin(replica, scope, send)

        return app

    async def _route(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        principal = None
        credential = None
        for name, value in scope["headers"]:
            if name == self._header:
                credential = value
                principal = self._principals.get(value)
                break
        if principal is None:
            self._count_auth("UNAUTHENTICATED", "")
            reason = b"credential not found" if credential is None else b"the API Key provided is invalid"
            await respond(send, 401, "text/plain", headers=[(b"www-authenticate", self._realm),
                                                             (b"x-ext-auth-reason", reason)])
            return
        if not principal.identity.allowed:
            self._count_auth("PERMISSION_DENIED", principal.identity.user)
            await respond(send, 403, "text/plain", headers=[(b"x-ext-auth-reason", b"Unauthorized")])
            return
        self.authorino.count("OK")
        body = await read_body(receive)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        user = principal.identity.user
        if self.faults.fail_open and self.faults.fails_open(user):  # the rate-limit call failed open: nothing counted
            answer = await self.model.respond(scope["method"], scope["path"], payload)
            await respond(send, answer.status, answer.content_type, answer.body, answer.chunks)
            return
        replica = self.replicas[self._turn % len(self.replicas)]
        self._turn += 1
        labels = principal.labels
        if self._model_label:
            model = payload.get("model") if isinstance(payload, dict) else None
            labels = labels + (str(model or ""),)
        extra = self._per_request_specs(principal, scope)
        request_specs = principal.request_specs + tuple(s for s in extra if s.hits_on_check)
        token_specs = principal.token_specs + tuple(s for s in extra if not s.hits_on_check)
        # One limiter call per policy kind, as the wasm-shim makes them: the RateLimitPolicy's (ShouldRateLimit)
        # first, then the TokenRateLimitPolicy's check (CheckRateLimit); each counts authorized or limited once.
        calls = [specs for specs in (request_specs, token_specs) if specs] or [()]
        headers: Headers = []  # the rate-limit headers of the RateLimitPolicy's call (the token check sends none)
        for call, specs in enumerate(calls):
            limited, found = await self._check(replica.limiter, specs, user,
                                               self.rate_limit_headers and call == 0 and bool(request_specs))
            headers += found
            hits = 1
            if self.faults and limited and token_specs and specs == token_specs:
                limited = not self.faults.take("token-over-limit", user)
            if self.faults and call == 0:
                limited, hits = self._inject(user, limited)
            if limited:
                replica.metrics.limited[labels] += 1
                if self.faults and call == 0 and request_specs and self.faults.take("early-reset", user):
                    replica.limiter.forget(specs)
                await respond(send, 429, "text/plain", TOO_MANY_REQUESTS, headers=headers)
                return
            replica.metrics.authorized[labels] += hits
        if self.faults and self.faults.take("model-429", user):
            answer = rate_limit_error()
        else:
            answer = await self.model.respond(scope["method"], scope["path"], payload)
        await respond(send, answer.status, answer.content_type, answer.body, answer.chunks, headers=headers)
        if answer.usage is not None and token_specs:  # the Report after the answer
            replica.limiter.report(token_specs, answer.usage.total_tokens)
            reported = labels + self._response_values(payload) if self._response_labels else labels
            replica.metrics.reports[reported] += 1
            if not (self.faults and self.faults.take("drop-tokens", user)):
                replica.metrics.token_hits[reported] += answer.usage.total_tokens

    async def _check(self, limiter: Limiter, specs: tuple[CounterSpec, ...], user: str,
                     with_headers: bool) -> tuple[bool, Headers]:
        """The limiter's check: whether the request is limited, and with `with_headers` Limitador's rate-limit
        headers of its counters as the check read them. With `overshoot`, its reading and its update are `overshoot`
        seconds apart, in which other requests read the same values and can all pass (Limitador's check-then-update
        race)."""
        if not self.overshoot and not with_headers:
            return limiter.check(specs) is not None, []
        limited = limiter.decide(specs) is not None
        headers = self._rate_limit_headers(limiter.states(specs, not limited), limited, user) if with_headers else []
        if not limited:
            if self.overshoot:
                await asyncio.sleep(self.overshoot)
            limiter.commit(specs)
        return limited, headers

    def _rate_limit_headers(self, states: list[CounterState], limited: bool, user: str) -> Headers:
        """Limitador's DRAFT_VERSION_03 headers: every counter as `max;w=seconds;name="..."`, most restrictive
        (least remaining, saturating at 0) first; Remaining and Reset (whole seconds, truncated) are its. The fault
        `headers-stale` reports an allowed request's counters as they were before its own hit."""
        if not states:
            return []
        stale = not limited and self.faults.stale(user)
        counters = sorted(((max(s.spec.max_value - s.value + (s.spec.hits_on_check if stale else 0), 0), s)
                           for s in states), key=lambda pair: pair[0])
        remaining, first = counters[0]
        listed = "".join(f', {s.spec.max_value};w={int(s.spec.seconds)};name="{self._limit_names[s.spec.limit_name]}"'
                         for _, s in counters)
        return [(b"x-ratelimit-limit", f"{first.spec.max_value}{listed}".encode()),
                (b"x-ratelimit-remaining", str(remaining).encode()),
                (b"x-ratelimit-reset", str(int(first.expires_in)).encode())]

    def _response_values(self, payload: Any) -> tuple[str, ...]:
        """The response-body labels' values, read from the request (the model simulator echoes its `model`)."""
        values = []
        for pointer in self._response_labels.values():
            value = payload
            for part in pointer.strip("/").split("/"):
                value = value.get(part) if isinstance(value, dict) else None
            values.append("" if value is None else str(value))
        return tuple(values)

    def _count_auth(self, status: str, user: str) -> None:
        """Authorino counts a rejection, unless the fault `auth-uncounted` leaves it out."""
        if not (self.faults and self.faults.take("auth-uncounted", user)):
            self.authorino.count(status)

    def _inject(self, user: str, limited: bool) -> tuple[bool, int]:
        """Apply the pending faults to one request: whether it is limited, and how many authorized calls count."""
        self._reached += 1
        if self._reached == self.faults.reset_after:
            self._restart()
        if self._reached == self.faults.forget_after:
            for replica in self.replicas:
                replica.limiter.clear()
        if limited:
            return not self.faults.take("over-limit", user), 1
        if self.faults.take("drop-authorized", user):
            return False, 0
        return False, 2 if self.faults.take("double-count", user) else 1

    def _restart(self) -> None:
        """What restarting every limiter replica loses: counters, windows and metrics; `started_at` moves on."""
        started = rfc3339(time.time())
        for replica in self.replicas:
            replica.limiter.clear()
            for counts in (replica.metrics.authorized, replica.metrics.limited, replica.metrics.token_hits,
                           replica.metrics.reports):
                counts.clear()
            replica.started_at = started

    def _per_request_specs(self, principal: _Principal, scope: dict[str, Any]) -> tuple[CounterSpec, ...]:
        """Limits that read request attributes, evaluated for this request."""
        if not principal.per_request_limits:
            return ()
        attributes = {**principal.identity.auth, "request": {
            "path": scope["path"], "method": scope["method"], "host": "",
            "headers": {k.decode(): v.decode() for k, v in scope["headers"] if k != self._header}}}
        specs: list[CounterSpec] = []
        for limit in principal.per_request_limits:
            try:
                if limit.applies(attributes):
                    specs.extend(_specs(limit, limit.counter_values(attributes)))
            except ExpressionError:
                continue
        return tuple(specs)

    async def _admin(self, replica: Replica, scope: dict[str, Any], send: Send) -> None:
        """Limitador's admin routes; the namespace must come URL-encoded (a raw `/` in it is a 404, as there)."""
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if path == "/metrics":
            await respond(send, 200, "text/plain; version=0.0.4; charset=utf-8", replica.metrics.render())
            return
        if path == "/status":
            await respond(send, 200, JSON, orjson.dumps(self.status(replica)))
            return
        route, _, namespace = path[1:].partition("/")
        if route not in ("limits", "counters") or not namespace or "/" in namespace:
            await respond(send, 404, "text/plain")
            return
        namespace = unquote(namespace)
        found = self.limits(namespace) if route == "limits" else self.counters(namespace, replica)
        await respond(send, 200, JSON, orjson.dumps(found))

    def status(self, replica: Replica) -> dict[str, Any]:
        """Limitador's GET /status for one replica."""
        return {"started_at": replica.started_at, "config_applied_at": replica.started_at,
                "config_version": self.config_version, "config_err_since": None}

    def limits(self, namespace: str) -> list[dict[str, Any]]:
        """Limitador's GET /limits/{ns}: every rate of every limit, as kuadrant-operator compiles them."""
        return list(self._compiled.values()) if namespace == self.namespace else []

    def counters(self, namespace: str, replica: Replica | None = None) -> list[dict[str, Any]]:
        """Limitador's GET /counters/{ns} of a replica (default 0): the live counters, remaining quota (unsigned,
        wrapping past the max) and whole seconds to reset (truncated)."""
        if namespace != self.namespace:
            return []
        result = []
        for state in (replica or self.replicas[0]).limiter.counters():
            limit = self._compiled[(state.spec.limit_name, state.spec.rate_index)]
            result.append({"limit": limit, "set_variables": dict(zip(limit["variables"], state.spec.values)),
                           "remaining": state.remaining, "expires_in_seconds": int(state.expires_in)})
        return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", required=True, help="manifest file or folder (repeatable)")
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, choices=sorted(SCHEMAS), help="metric names to serve")
    parser.add_argument("--namespace",
                        help=f"limitador_namespace label (default: from an HTTPRoute, else {DEFAULT_NAMESPACE})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ttft", type=float, default=0.0, help="model time to first token, seconds")
    parser.add_argument("--per-token", type=float, default=0.0, help="model time per completion token, seconds")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help=f"a model the simulator serves (repeatable; default {ModelConfig.models[0]})")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND[:ARG]",
                        help=f"inject a fault (tests): {SYNTAX}")
    parser.add_argument("--replica-port", action="append", type=int, default=[], metavar="PORT",
                        help="one more limiter replica, its admin routes on PORT (repeatable)")
    parser.add_argument("--rate-limit-headers", action="store_true",
                        help="serve X-RateLimit-Limit/Remaining/Reset on the RateLimitPolicy's answers (200 and 429), "
                             "as Limitador with rateLimitHeaders: DRAFT_VERSION_03")
    parser.add_argument("--overshoot", type=float, nargs="?", const=OVERSHOOT, default=0.0, metavar="SECONDS",
                        help="Limitador's check-then-update race: a check's reading and its update SECONDS apart "
                             f"(default {OVERSHOOT:g}), so concurrent requests of one counter can all pass")
    parser.add_argument("--replica-storage", default="shared", choices=STORAGES,
                        help="shared: one set of counters for all replicas; separate: each its own (default shared)")
    return parser


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to `_serve` (several of them share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port as uvicorn binds one (listening starts when its server does)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def _serve(servers: list[tuple[_Server, socket.socket]]) -> None:
    """Run every server on its socket until SIGINT or SIGTERM, which stops them all."""
    def stop() -> None:
        for server, _ in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    await asyncio.gather(*(server.serve(sockets=[sock]) for server, sock in servers))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = load_plan(args.policy)
        gateway = Gateway(plan, schema_named(args.schema), args.namespace,
                          ModelSimulator(ModelConfig(tuple(args.model) or ModelConfig.models,
                                                     time_to_first_token=args.ttft, time_per_token=args.per_token)),
                          faults=Faults.parse(args.fault), replicas=1 + len(args.replica_port),
                          replica_storage=args.replica_storage, rate_limit_headers=args.rate_limit_headers,
                          overshoot=args.overshoot)
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    servers = []
    for app, flag, port in [(gateway, "--port", args.port)] + [
            (gateway.admin_app(i), "--replica-port", port) for i, port in enumerate(args.replica_port, 1)]:
        try:
            sock = _bind(args.host, port)
        except OSError as exc:
            print(f"error: port {port} on {args.host} is in use ({flag}): {exc.strerror}", file=sys.stderr)
            return 2
        config = uvicorn.Config(app, log_level="warning", access_log=False, http="httptools", lifespan="on")
        servers.append((_Server(config), sock))
    uvloop.run(_serve(servers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
