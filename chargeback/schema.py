"""Metric schemas: which metric and label names a Limitador target serves (DOMAIN.md section 4)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSchema:
    """Names of the per-user counters one kind of target exposes."""

    name: str
    authorized: str  # authorized calls, per user
    limited: str  # limited calls, per user
    token_hits: str | None  # authorized token hits, per user (None: not exposed)
    description: str
    namespace_label: str = "limitador_namespace"
    user_label: str = "user"
    group_label: str = "group"


SCHEMAS: dict[str, MetricSchema] = {
    s.name: s
    for s in (
        MetricSchema("seed", "authorized_calls_with_user_and_group", "limited_calls_with_user_and_group", None,
                     "the seed demo's names (patched wasm-shim + ServiceMonitor relabeling)"),
        MetricSchema("fork", "authorized_calls", "limited_calls", "authorized_token_hits",
                     "the nerdalert/limitador fork: user and model labels, group usually absent"),
        MetricSchema("telemetry", "authorized_calls", "limited_calls", "authorized_hits",
                     "upstream Kuadrant >= 1.3 with a TelemetryPolicy labelling user and group"),
    )
}


def schema_named(name: str) -> MetricSchema:
    """The schema called `name`; a one-line error listing the known ones otherwise."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown metric schema {name!r}: choose one of {', '.join(SCHEMAS)}") from None


CANDIDATE_METRICS = tuple(dict.fromkeys(
    name for s in SCHEMAS.values() for name in (s.authorized, s.limited, s.token_hits) if name))


def detect_schema(names_with_labels: dict[str, set[str]]) -> MetricSchema | None:
    """The schema a target serves, from metric name -> label names of its per-user series; None if none fits."""
    if "authorized_calls_with_user_and_group" in names_with_labels:
        return SCHEMAS["seed"]
    labels = names_with_labels.get("authorized_calls") or names_with_labels.get("limited_calls")
    if labels is None:
        return None
    if "authorized_token_hits" in names_with_labels or ("model" in labels and "group" not in labels):
        return SCHEMAS["fork"]
    return SCHEMAS["telemetry"]
