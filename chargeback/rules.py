"""Prometheus recording rules for chargeback, generated from the Plan (prices, user -> tier) for one metric schema.

Every schema gets the same record names, so one dashboard serves all: calls, limited calls and cost per user
(labels user, tier) and per tier, and the limited ratio per tier. They are totals since the counters started
(raw counter values, no rate()/increase() extrapolation), copies from several scrape jobs or Prometheus
replicas counted once, Limitador replicas summed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .counters import COPY_LABELS
from .plan import DEFAULT_POLICY, Plan, load_plan
from .schema import MetricSchema, schema_named

REPO_ROOT = Path(__file__).resolve().parent.parent
# Labels that tell copies of one scrape apart (several monitors, Prometheus replicas): never summed over. Limitador
# replicas (pod, instance) are summed: each counts its own calls.
SCRAPE_LABELS = tuple(sorted(COPY_LABELS - {"__name__"}))


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (the PromQL) as `|` blocks."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def _quote(value: str) -> str:
    """A PromQL string literal."""
    return json.dumps(value)


def _constants(label: str, values: dict[str, float]) -> str:
    """One static series per key: `label_replace(vector(value), label, key, "", "")`, joined with `or`."""
    return "\nor ".join(f'label_replace(vector({value!r}), "{label}", {_quote(key)}, "", "")'
                        for key, value in values.items())


def _user_tiers(plan: Plan) -> dict[str, str]:
    """user -> tier from the Plan's identities; a user given two tiers is an error (the join would be ambiguous)."""
    tiers: dict[str, str] = {}
    for identity in plan.identities:
        if tiers.setdefault(identity.user, identity.tier) != identity.tier:
            raise ValueError(f"user {identity.user!r} has two tiers in the Plan: "
                             f"{tiers[identity.user]} and {identity.tier}")
    return tiers


def _per_user(metric: str, user: str) -> str:
    """A counter per user with its tier: copies of one series (scrape labels) counted once, replicas summed."""
    return (f"sum by ({user}) (\n"
            f"  max without ({', '.join(SCRAPE_LABELS)}) ({metric}{{{user}!=\"\"}})\n"
            f")\n"
            f"* on ({user}) group_left (tier) chargeback:user_tier:info")


def _display(source: str) -> str:
    """A manifest path as the header shows it: relative to the repository when inside it."""
    path = Path(source).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else source


def render_rules(plan: Plan, schema: MetricSchema) -> str:
    """The Prometheus rule file (YAML text) for `schema`, priced and tiered by `plan`."""
    if not plan.tiers:
        raise ValueError(f"{', '.join(plan.sources)}: no tiers in the Plan, nothing to price")
    user = schema.user_label
    prices_per_call = {name: tier.price.per_call for name, tier in plan.tiers.items()}
    prices_per_1k = {name: tier.price.per_1k_tokens for name, tier in plan.tiers.items()}
    info = "\nor ".join(f'label_replace(label_replace(vector(1), "{user}", {_quote(u)}, "", ""), '
                        f'"tier", {_quote(t)}, "", "")' for u, t in _user_tiers(plan).items())
    call_cost = "chargeback:calls:by_user * on (tier) group_left chargeback:price_per_call:by_tier"
    rules = [
        {"record": "chargeback:price_per_call:by_tier", "expr": _constants("tier", prices_per_call)},
        {"record": "chargeback:price_per_1k_tokens:by_tier", "expr": _constants("tier", prices_per_1k)},
        {"record": "chargeback:user_tier:info", "expr": info},
        {"record": "chargeback:calls:by_user", "expr": _per_user(schema.authorized, user)},
        {"record": "chargeback:limited_calls:by_user", "expr": _per_user(schema.limited, user)},
    ]
    if schema.token_hits:
        rules.append({"record": "chargeback:tokens:by_user", "expr": _per_user(schema.token_hits, user)})
        call_cost += ("\n+\n(chargeback:tokens:by_user or chargeback:calls:by_user * 0)\n"
                      "* on (tier) group_left chargeback:price_per_1k_tokens:by_tier / 1000")
    limited = "(chargeback:limited_calls:by_tier or chargeback:calls:by_tier * 0)"
    calls = "(chargeback:calls:by_tier or chargeback:limited_calls:by_tier * 0)"
    rules += [
        {"record": "chargeback:calls:by_tier", "expr": "sum by (tier) (chargeback:calls:by_user)"},
        {"record": "chargeback:limited_calls:by_tier", "expr": "sum by (tier) (chargeback:limited_calls:by_user)"},
        {"record": "chargeback:cost:by_user", "expr": call_cost},
        {"record": "chargeback:cost:by_tier", "expr": "sum by (tier) (chargeback:cost:by_user)"},
        {"record": "chargeback:limited_ratio:by_tier", "expr": f"{limited}\n/\n({calls} + {limited})"},
    ]
    counters = ", ".join(n for n in (schema.authorized, schema.limited, schema.token_hits) if n)
    sources = " ".join(_display(s) for s in plan.sources)
    policy_args = " ".join(f"--policy {_display(s)}" for s in plan.sources)
    tokens = (f" + {schema.token_hits} x per_1k_tokens / 1000" if schema.token_hits
              else " (this schema exposes no token counter)")
    header = (
        f"# Chargeback recording rules for the `{schema.name}` metric schema ({counters}).\n"
        f"# Generated from {sources} (prices and user -> tier) by\n"
        f"#   python -m chargeback rules --schema {schema.name} {policy_args}\n"
        f"# Do not edit: change the manifests and regenerate. Totals since the counters started (raw counters),\n"
        f"# copies of a series from several scrape jobs or replicas counted once (max), per user then per tier.\n"
        f"# Cost in {plan.currency}: authorized calls x per_call{tokens}.\n"
    )
    body = {"groups": [{"name": f"chargeback-{schema.name}", "rules": rules}]}
    return header + yaml.dump(body, Dumper=_BlockDumper, sort_keys=False, width=120)


def main_rules(args: argparse.Namespace) -> int:
    """`python -m chargeback rules`: the schema's rule file, to `--out` or stdout."""
    plan = load_plan(args.policy or [DEFAULT_POLICY])
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = render_rules(plan, schema_named(args.schema))
    if args.out is None:
        sys.stdout.write(text)
        return 0
    try:
        Path(args.out).write_text(text)
    except OSError as exc:
        raise ValueError(f"{args.out}: cannot write: {exc.strerror}") from None
    return 0
