"""The stand-in gateway: Authorino (API keys, groups) then Limitador (fixed windows) in front of the model simulator.

Serves the OpenAI routes through auth and limits, and Limitador's admin routes (`/metrics`, `/status`,
`/limits/{ns}`, `/counters/{ns}`) on the same port.
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson

from chargeback.expressions import CelExpression, ExpressionError
from chargeback.manifests import ManifestError
from chargeback.plan import Identity, Limit, Plan, load_plan
from chargeback.schema import SCHEMAS, MetricSchema, schema_named

from .asgi import Receive, Send, read_body, respond, serve_lifespan
from .faults import Faults
from .limiter import CounterSpec, Limiter
from .metrics import LimitadorMetrics
from .model import ModelConfig, ModelSimulator

DEFAULT_NAMESPACE = "llm/vllm-httproute"
JSON = "application/json"
ADMIN_PREFIXES = ("/limits/", "/counters/")


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
    return [CounterSpec(limit.name, i, values, rate.limit, rate.window, hits) for i, rate in enumerate(limit.rates)]


def _label_value(expression: CelExpression, identity: Identity) -> str:
    """A TelemetryPolicy label for one identity; empty (so Prometheus drops the label) when it cannot be built."""
    try:
        return str(expression.evaluate(identity.auth))
    except ExpressionError:
        return ""


class Gateway:
    """A raw ASGI app enforcing a Plan the way Authorino and Limitador would."""

    def __init__(self, plan: Plan, schema: MetricSchema, namespace: str | None = None,
                 model: ModelSimulator | None = None, clock: Callable[[], float] = time.monotonic,
                 faults: Faults | None = None):
        if plan.auth is None:
            raise ManifestError(f"{', '.join(plan.sources)}: no AuthPolicy with apiKey authentication")
        self.plan = plan
        self.namespace = namespace or plan.limitador_namespace or DEFAULT_NAMESPACE
        self.model = model or ModelSimulator()
        self.limiter = Limiter(clock)
        self._reached = 0  # requests that reached the limiter (for reset-after)
        self._header = plan.auth.header.encode()
        self._realm = f'{plan.auth.prefix or "APIKEY"} realm="{plan.auth.policy}"'.encode()
        self.faults = faults or Faults()
        self._label_names, self._label_exprs = self._labels(schema)
        self._model_label = schema.name == "fork"
        self.metrics = LimitadorMetrics(schema, self.namespace, self._label_names + (("model",) if self._model_label else ()))
        self._principals = {
            plan.auth.header_value(i.key).encode(): self._principal(i) for i in plan.identities if i.known
        }

    def _labels(self, schema: MetricSchema) -> tuple[tuple[str, ...], dict[str, CelExpression]]:
        if schema.name == "telemetry" and self.plan.telemetry_labels:
            return tuple(self.plan.telemetry_labels), dict(self.plan.telemetry_labels)
        if schema.name == "fork" or self.faults.no_group:
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
        return _Principal(identity, tuple(request_specs), tuple(token_specs),
                          tuple(l for l in self.plan.limits if l.per_request), labels)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
        elif scope["type"] == "http":
            path = scope["path"]
            if path == "/metrics" or path == "/status" or path.startswith(ADMIN_PREFIXES):
                await self._admin(path, send)
            else:
                await self._route(scope, receive, send)

    async def _route(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        principal = None
        credential = None
        for name, value in scope["headers"]:
            if name == self._header:
                credential = value
                principal = self._principals.get(value)
                break
        if principal is None:
            reason = b"credential not found" if credential is None else b"the API Key provided is invalid"
            await respond(send, 401, "text/plain", headers=[(b"www-authenticate", self._realm),
                                                             (b"x-ext-auth-reason", reason)])
            return
        if not principal.identity.allowed:
            await respond(send, 403, "text/plain", headers=[(b"x-ext-auth-reason", b"Unauthorized")])
            return
        body = await read_body(receive)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            payload = None
        labels = principal.labels
        if self._model_label:
            model = payload.get("model") if isinstance(payload, dict) else None
            labels = labels + (str(model or ""),)
        specs = principal.request_specs + principal.token_specs + self._per_request_specs(principal, scope)
        limited = self.limiter.check(specs) is not None
        hits = 1
        if self.faults:
            limited, hits = self._inject(principal.identity.user, limited)
        if limited:
            self.metrics.limited[labels] += 1
            await respond(send, 429, "text/plain")
            return
        self.metrics.authorized[labels] += hits
        answer = await self.model.respond(scope["method"], scope["path"], payload)
        if answer.chunks is None:
            await respond(send, answer.status, answer.content_type, answer.body)
        else:
            await respond(send, answer.status, answer.content_type, chunks=answer.chunks)
        if answer.usage is not None and principal.token_specs:
            self.limiter.report(principal.token_specs, answer.usage.total_tokens)
            if not (self.faults and self.faults.take("drop-tokens", principal.identity.user)):
                self.metrics.token_hits[labels] += answer.usage.total_tokens

    def _inject(self, user: str, limited: bool) -> tuple[bool, int]:
        """Apply the pending faults to one request: whether it is limited, and how many authorized calls count."""
        self._reached += 1
        if self._reached == self.faults.reset_after:
            self.limiter = Limiter(self.limiter.clock)
            for counts in (self.metrics.authorized, self.metrics.limited, self.metrics.token_hits):
                counts.clear()
        if limited:
            return not self.faults.take("over-limit", user), 1
        if self.faults.take("drop-authorized", user):
            return False, 0
        return False, 2 if self.faults.take("double-count", user) else 1

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

    async def _admin(self, path: str, send: Send) -> None:
        if path == "/metrics":
            await respond(send, 200, "text/plain; version=0.0.4; charset=utf-8", self.metrics.render())
        elif path == "/status":
            await respond(send, 200, JSON, b'{"status":"ok"}')
        elif path.startswith("/limits/"):
            await respond(send, 200, JSON, orjson.dumps(self.limits(path.removeprefix("/limits/"))))
        else:
            await respond(send, 200, JSON, orjson.dumps(self.counters(path.removeprefix("/counters/"))))

    def _limit_json(self, name: str, index: int) -> dict[str, Any]:
        limit = next(l for l in self.plan.limits if l.name == name)
        rate = limit.rates[index]
        return {"namespace": self.namespace, "max_value": rate.limit, "seconds": rate.window, "name": limit.name,
                "conditions": [p.source for p in limit.predicates], "variables": [c.source for c in limit.counters]}

    def limits(self, namespace: str) -> list[dict[str, Any]]:
        """Limitador's GET /limits/{ns}: every rate of every limit, as a Limitador limit."""
        if namespace != self.namespace:
            return []
        return [self._limit_json(l.name, i) for l in self.plan.limits for i in range(len(l.rates))]

    def counters(self, namespace: str) -> list[dict[str, Any]]:
        """Limitador's GET /counters/{ns}: the live counters with remaining quota and seconds to reset."""
        if namespace != self.namespace:
            return []
        result = []
        for state in self.limiter.counters():
            limit = self._limit_json(state.spec.limit_name, state.spec.rate_index)
            result.append({"limit": limit, "set_variables": dict(zip(limit["variables"], state.spec.values)),
                           "remaining": state.remaining, "expires_in_seconds": round(state.expires_in, 3)})
        return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--policy", action="append", required=True, help="manifest file or folder (repeatable)")
    parser.add_argument("--schema", default="seed", choices=sorted(SCHEMAS), help="metric names to serve")
    parser.add_argument("--namespace", help=f"limitador_namespace label (default: from an HTTPRoute, else {DEFAULT_NAMESPACE})")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--ttft", type=float, default=0.0, help="model time to first token, seconds")
    parser.add_argument("--per-token", type=float, default=0.0, help="model time per completion token, seconds")
    parser.add_argument("--fault", action="append", default=[], help="inject a fault (tests): " + Faults.__doc__.split(";")[0])
    return parser


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    try:
        plan = load_plan(args.policy)
        gateway = Gateway(plan, schema_named(args.schema), args.namespace,
                          ModelSimulator(ModelConfig(time_to_first_token=args.ttft, time_per_token=args.per_token)),
                          faults=Faults.parse(args.fault))
    except (ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    uvicorn.run(gateway, host=args.host, port=args.port, log_level="warning", access_log=False,
                loop="uvloop", http="httptools", lifespan="on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
