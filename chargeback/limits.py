"""Limitador limits as kuadrant-operator compiles them from the Plan's RateLimitPolicy and TokenRateLimitPolicy limits
(github.com/Kuadrant/kuadrant-operator, `internal/controller/limitador_limits_reconciler.go`)."""
from __future__ import annotations

import hashlib
from typing import Any

from .plan import Limit, Plan, Rate


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


def compiled_limits(plan: Plan, namespace: str) -> list[dict[str, Any]]:
    """Every rate of every limit of the Plan, as Limitador holds them for `namespace`."""
    return [compiled_limit(limit, rate, namespace) for limit in plan.limits for rate in limit.rates]
