"""Metric schemas: which metric and label names a Limitador target serves (the seed demo's, a Limitador fork's,
and those a TelemetryPolicy labels).

Schemas live in a registry a user can extend with `register_schema`. Everything the detector and the stand-in
gateway need to know about a schema is carried by the schema itself (its counter names and label facts), so a
registered schema is detected and served like a built-in one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

MODEL_LABEL = "model"  # the label a schema with `model_label` puts on its per-user series
DEFAULT_SCHEMA = "seed"  # the schema read when nothing reached the limiter (every schema reads zero there)


@dataclass(frozen=True)
class MetricSchema:
    """Names of the per-user counters one kind of target exposes, and the label facts of their series."""

    name: str
    authorized: str  # authorized calls, per user
    limited: str  # limited calls, per user
    token_hits: str | None  # authorized token hits, per user (None: not exposed)
    description: str
    namespace_label: str = "limitador_namespace"
    user_label: str = "user"
    group_label: str = "group"
    labels_group: bool = True  # the target labels per-user series with the user's group
    model_label: bool = False  # per-user series carry a `model` label
    telemetry_labels: bool = False  # labels come from a TelemetryPolicy, so any label set may be served
    reports: str | None = None  # token reports after the answer, per user (Limitador after v2.4.0: report_calls)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The counter names this schema reads, in order: authorized, limited, token hits if exposed."""
        return tuple(n for n in (self.authorized, self.limited, self.token_hits) if n)

    def fits(self, names_with_labels: Mapping[str, set[str]], *, own_names: bool = False) -> bool:
        """Whether per-user series (metric name -> label names) look like this schema's.

        A schema fits when its authorized or limited counter is present and one of: its counter names are its own
        (`own_names`: no other registered schema uses them), its token counter is present, its labels come from a
        TelemetryPolicy (any labels fit), or the series' labels match its label facts (`model` present exactly when
        `model_label`, the group label present exactly when `labels_group`).
        """
        if self.authorized not in names_with_labels and self.limited not in names_with_labels:
            return False
        if own_names or self.telemetry_labels or (self.token_hits and self.token_hits in names_with_labels):
            return True
        labels = names_with_labels.get(self.authorized) or names_with_labels.get(self.limited) or set()
        return (MODEL_LABEL in labels) == self.model_label and (self.group_label in labels) == self.labels_group


_REGISTRY: dict[str, MetricSchema] = {}
SCHEMAS: Mapping[str, MetricSchema] = MappingProxyType(_REGISTRY)  # name -> schema, read-only view of the registry


def register_schema(schema: MetricSchema) -> MetricSchema:
    """Add `schema` to the registry (detection, `schema_named`, `SCHEMAS`, `candidate_metrics()`); returns it."""
    if schema.name in _REGISTRY:
        raise ValueError(f"metric schema {schema.name!r} is already registered")
    if not schema.name or not schema.authorized or not schema.limited or schema.token_hits == "":
        raise ValueError(f"metric schema {schema.name!r}: its name and metric names must be non-empty")
    _REGISTRY[schema.name] = schema
    return schema


def unregister_schema(name: str) -> MetricSchema:
    """Remove the schema called `name` from the registry (for tests and plugins undoing a registration)."""
    schema = schema_named(name)
    del _REGISTRY[name]
    return schema


def schema_named(name: str) -> MetricSchema:
    """The schema called `name`; a one-line error listing the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown metric schema {name!r}: choose one of {', '.join(_REGISTRY)}") from None


def candidate_metrics() -> tuple[str, ...]:
    """Every counter name a registered schema reads (its report counter too), without repeats, in registration
    order."""
    return tuple(dict.fromkeys(name for s in _REGISTRY.values() for name in (*s.metrics, s.reports) if name))


def _own_names(schema: MetricSchema) -> bool:
    """Whether no other registered schema uses `schema`'s authorized or limited counter name."""
    mine = {schema.authorized, schema.limited}
    return not any(mine & {s.authorized, s.limited} for s in _REGISTRY.values() if s.name != schema.name)


def detection_order() -> tuple[MetricSchema, ...]:
    """The registered schemas most specific first, the order `detect_schema` asks them in.

    1. schemas whose authorized and limited counter names are their own: the names alone identify them;
    2. schemas with fixed label facts (`telemetry_labels` false): the series' labels can confirm them;
    3. schemas whose labels come from a TelemetryPolicy: any labels fit, so they are the fallback for their names.
    Registration order breaks ties. For the built-ins: seed, fork, telemetry.
    """
    def tier(schema: MetricSchema) -> int:
        return 0 if _own_names(schema) else 2 if schema.telemetry_labels else 1
    return tuple(sorted(_REGISTRY.values(), key=tier))  # sorted() is stable: registration order within a tier


def detect_schema(names_with_labels: Mapping[str, set[str]]) -> MetricSchema | None:
    """The schema a target serves, from metric name -> label names of its per-user series; None if none fits.

    The first schema in `detection_order()` that `fits` the series wins.
    """
    for schema in detection_order():
        if schema.fits(names_with_labels, own_names=_own_names(schema)):
            return schema
    return None

for _builtin in (
    MetricSchema("seed", "authorized_calls_with_user_and_group", "limited_calls_with_user_and_group", None,
                 "the seed demo's names (patched wasm-shim + ServiceMonitor relabeling)"),
    MetricSchema("fork", "authorized_calls", "limited_calls", "authorized_token_hits",
                 "the nerdalert/limitador fork: user and model labels, group usually absent",
                 labels_group=False, model_label=True),
    MetricSchema("telemetry", "authorized_calls", "limited_calls", "authorized_hits",
                 "upstream Kuadrant >= 1.3 with a TelemetryPolicy labelling user and group", telemetry_labels=True,
                 reports="report_calls"),
):
    register_schema(_builtin)
del _builtin

