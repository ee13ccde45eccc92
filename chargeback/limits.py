"""Limitador limits as kuadrant-operator compiles them from the Plan's RateLimitPolicy and TokenRateLimitPolicy limits
(github.com/Kuadrant/kuadrant-operator, `internal/controller/limitador_limits_reconciler.go`), and how a Limitador's
`GET /limits/{ns}` differs from them."""
from __future__ import annotations

import argparse
import hashlib
import re
import sys
from typing import Any
from urllib.parse import quote

import yaml

from .limitador import LimitadorAdmin
from .plan import DEFAULT_NAMESPACE, DEFAULT_POLICY, Limit, Plan, PolicyTarget, Rate, load_plan

_DESCRIPTOR = re.compile(r'descriptors\[0\]\["([^"]*)"\]|descriptors\[0\]\.([\w.]+)')
LIMITS_FILE_KEYS = ("namespace", "max_value", "seconds", "name", "conditions", "variables")


def limit_identifier(limit: Limit) -> str:
    """The descriptor key the gateway sends for `limit`: `limit.<key>__<hash>`, or `tokenlimit.<key>__<hash>` for a
    token limit; the key with every character but letters, digits and `_` as `_`, the hash the first 4 bytes of
    sha256(`<policy ns>/<policy name>/<key>`) in hex."""
    prefix = "tokenlimit." if limit.kind == "tokens" else "limit."
    key = "".join(c if c.isalnum() or c == "_" else "_" for c in limit.name)
    return f"{prefix}{key}__{hashlib.sha256(f'{limit.policy}/{limit.name}'.encode()).hexdigest()[:8]}"


def descriptor(key: str) -> str:
    """How Limitador refers to an entry the gateway sends: `descriptors[0]["<key>"]`."""
    return f'descriptors[0]["{key}"]'


def limit_variables(limit: Limit) -> list[str]:
    """Limitador's `variables` of `limit`: the descriptor of each counter expression."""
    return [descriptor(counter.source) for counter in limit.counters]


def compiled_limit(limit: Limit, rate: Rate, namespace: str) -> dict[str, Any]:
    """One rate of `limit` as a Limitador limit object (`seconds` whole: a 500ms window gives 0).

    kuadrant-operator names token limits by their key too; only the descriptor key is prefixed `tokenlimit.`."""
    return {"id": None, "namespace": namespace, "max_value": rate.limit, "seconds": int(rate.window),
            "name": limit.name, "conditions": [f'{descriptor(limit_identifier(limit))} == "1"'],
            "variables": limit_variables(limit)}


def _effective(policies: list[tuple[PolicyTarget, list[Limit]]]) -> list[Limit]:
    """The limits of one route's effective policy, policies ordered least specific first (policy-machinery's
    EffectivePolicyForPath): from the most specific out, each less specific policy merges by its own strategy;
    atomic defaults apply only to a route with no limits yet, atomic overrides replace them, merge goes by limit
    name (defaults give way, overrides win). A limit keeps the policy it came from (its hash)."""
    if not policies:
        return []
    rules = {limit.name: limit for limit in policies[-1][1]}
    for target, limits in reversed(policies[:-1]):
        own = {limit.name: limit for limit in limits}
        if target.section == "overrides":
            rules = own if target.strategy == "atomic" else {**rules, **own}
        else:
            rules = (rules or own) if target.strategy == "atomic" else {**own, **rules}
    return list(rules.values())


def effective_limits(plan: Plan, namespace: str) -> dict[str, list[Limit]]:
    """limitador namespace (`<HTTPRoute ns>/<HTTPRoute name>`) -> the Plan's limits on it: a policy targeting an
    HTTPRoute gives that route's, one targeting a Gateway every HTTPRoute whose parentRefs name it, merged into each
    route's effective policy. Policies that reach no HTTPRoute of the manifests (a Gateway without routes here, or no
    targetRef) count for `namespace`, merged only with those of the same target."""
    by_policy: dict[tuple[str, str], list[Limit]] = {}
    for limit in plan.limits:
        by_policy.setdefault((limit.kind, limit.policy), []).append(limit)

    def effective(targets: list[PolicyTarget]) -> list[Limit]:
        ordered = sorted(targets, key=_specificity)
        return [limit for kind in ("requests", "tokens") for limit in _effective(
            [(t, by_policy.get((kind, t.policy), [])) for t in ordered if t.kind == kind])]

    routes = {t.target: () for t in plan.policy_targets if t.target_kind == "HTTPRoute"} | plan.routes
    on = {route: [t for t in plan.policy_targets if _attaches(t, route, gateways)]
          for route, gateways in routes.items()}
    reached = {t for targets in on.values() for t in targets}
    found = {route: effective(targets) for route, targets in on.items()}
    strays: dict[tuple[str, str], list[PolicyTarget]] = {}
    for target in plan.policy_targets:
        if target not in reached:
            strays.setdefault((target.target_kind, target.target), []).append(target)
    found[namespace] = found.get(namespace, []) + [limit for group in strays.values() for limit in effective(group)]
    return {route: [limit for limit in plan.limits if limit in limits] for route, limits in found.items() if limits}


def _attaches(target: PolicyTarget, route: str, gateways: tuple[str, ...]) -> bool:
    return (target.target_kind, target.target) in {("HTTPRoute", route), *(("Gateway", g) for g in gateways)}


def _specificity(target: PolicyTarget) -> int:
    """Gateway policies before route policies (a policy without a target counts as the route's own)."""
    return 0 if target.target_kind == "Gateway" else 1


def expected_limits(plan: Plan, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """limitador namespace -> every rate of every limit on it, as Limitador holds them (see `effective_limits`)."""
    return {ns: [compiled_limit(limit, rate, ns) for limit in limits for rate in limit.rates]
            for ns, limits in effective_limits(plan, namespace).items()}


def compiled_limits(plan: Plan, namespace: str) -> list[dict[str, Any]]:
    """The limits Limitador holds for `namespace` (policies reaching no HTTPRoute of the manifests count for it)."""
    return expected_limits(plan, namespace).get(namespace, [])


def limits_file(plan: Plan, namespace: str) -> str:
    """Every namespace's limits as a Limitador limits file (limitador-server's LIMITS_FILE: a YAML list)."""
    limits = [{key: limit[key] for key in LIMITS_FILE_KEYS}
              for found in expected_limits(plan, namespace).values() for limit in found]
    return yaml.safe_dump(limits, sort_keys=False, default_flow_style=False, width=1000)


def _plain(expression: str) -> str:
    """An expression with every `descriptors[0]["k"]` / `descriptors[0].k` as plain `k`: operator versions differ."""
    return _DESCRIPTOR.sub(lambda m: m.group(1) or m.group(2), expression)


def _keys(limit: dict[str, Any], field: str) -> frozenset[str]:
    return frozenset(_plain(str(item)) for item in limit.get(field) or [])


def _label(limit: dict[str, Any]) -> str:
    keys = ", ".join(sorted(re.sub(r'\s*==\s*"1"$', "", c) for c in _keys(limit, "conditions")))
    return f"{limit.get('name')} ({keys}, {limit.get('max_value')} per {limit.get('seconds')} s)"


def limits_diff(expected: list[dict[str, Any]], found: list[dict[str, Any]], namespace: str) -> list[str]:
    """How Limitador's `GET /limits/{namespace}` (`found`) differs from the `expected` limits of that namespace, one
    line each: a limit missing, or with another max_value, name, seconds or variables, or an extra limit on one of
    the expected descriptor keys. Limits are matched by Limitador's identity (seconds, conditions and variables, as
    sets); other policies' limits are left alone."""
    where = f"GET /limits/{quote(namespace, safe='')}"
    identity = {(l.get("seconds"), _keys(l, "conditions"), _keys(l, "variables")): l for l in found}
    unmatched = [l for l in found if (l.get("seconds"), _keys(l, "conditions"), _keys(l, "variables"))
                 not in {(e["seconds"], _keys(e, "conditions"), _keys(e, "variables")) for e in expected}]
    problems = []
    for limit in expected:
        label = f"limit {_label(limit)}"
        match = identity.get((limit["seconds"], _keys(limit, "conditions"), _keys(limit, "variables")))
        if match is not None:
            for field in ("max_value", "name"):
                if match.get(field) != limit[field]:
                    problems.append(f"{label} has {field} {match.get(field)!r} in {where}, the policy says "
                                    f"{limit[field]!r}")
            continue
        near = [l for l in unmatched if _keys(l, "conditions") == _keys(limit, "conditions")]
        if len(near) != 1:
            problems.append(f"{label} is missing from {where}")
            continue
        other = near[0]
        unmatched.remove(other)
        for field, differs in (("seconds", other.get("seconds") != limit["seconds"]),
                               ("variables", _keys(other, "variables") != _keys(limit, "variables"))):
            if differs:
                problems.append(f"{label} has {field} {other.get(field)!r} in {where}, the policy says "
                                f"{limit[field]!r}")
    ours = {key for limit in expected for key in _keys(limit, "conditions")}
    problems += [f"{where} has limit {_label(l)}, which the policy does not give" for l in unmatched
                 if _keys(l, "conditions") & ours]
    return problems


def main_limits(args: argparse.Namespace) -> int:
    """`chargeback limits`: the limits file to stdout; with `--limitador-url`, each difference from Limitador's
    `GET /limits/{ns}` on stderr (exit 1), or none (exit 0)."""
    plan = load_plan(args.policy or [DEFAULT_POLICY])
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    namespace = args.namespace or plan.limitador_namespace or DEFAULT_NAMESPACE
    if not args.limitador_url:
        sys.stdout.write(limits_file(plan, namespace))
        return 0
    admin = LimitadorAdmin(args.limitador_url, namespace)
    expected = expected_limits(plan, namespace)
    problems = [f"Limitador at {admin.url}: {problem}" for ns, limits in expected.items()
                for problem in limits_diff(limits, admin.limits(ns), ns)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"Limitador at {admin.url} holds the {sum(map(len, expected.values()))} limits of the policies in "
              f"{', '.join(expected)}")
    return 1 if problems else 0
