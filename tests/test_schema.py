"""The metric schema registry: registering a schema, and detecting each schema from its per-user series."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from chargeback import schema as schema_module
from chargeback.schema import (
    DEFAULT_SCHEMA,
    SCHEMAS,
    MetricSchema,
    candidate_metrics,
    detect_schema,
    detection_order,
    register_schema,
    schema_named,
)

SEED_A, SEED_L = "authorized_calls_with_user_and_group", "limited_calls_with_user_and_group"
MINE = MetricSchema("mine", "my_authorized_calls", "my_limited_calls", "my_token_hits",
                    "a user's own gateway: user and tenant labels", group_label="tenant")


@pytest.fixture
def registry() -> Iterator[None]:
    """Leave the registry as it was, whatever the test registers."""
    saved = dict(schema_module._REGISTRY)
    try:
        yield
    finally:
        schema_module._REGISTRY.clear()
        schema_module._REGISTRY.update(saved)


def test_the_built_ins_are_registered_and_the_default_is_one_of_them() -> None:
    assert [s.name for s in SCHEMAS.values()] == ["seed", "fork", "telemetry"]
    assert schema_named(DEFAULT_SCHEMA) is SCHEMAS["seed"]
    assert [s.name for s in detection_order()] == ["seed", "fork", "telemetry"]
    assert candidate_metrics() == (SEED_A, SEED_L, "authorized_calls", "limited_calls", "authorized_token_hits",
                                   "authorized_hits", "report_calls")


def test_the_built_ins_carry_their_label_facts() -> None:
    facts = {s.name: (s.labels_group, s.model_label, s.telemetry_labels) for s in SCHEMAS.values()}
    assert facts == {"seed": (True, False, False), "fork": (False, True, False), "telemetry": (True, False, True)}


@pytest.mark.parametrize("series, expected", [
    ({SEED_A: {"user", "group"}}, "seed"),
    ({SEED_A: {"user"}}, "seed"),  # the no-group fault: the names alone identify the seed schema
    ({SEED_L: {"user", "group"}}, "seed"),  # only limited calls so far
    ({SEED_A: {"user", "group"}, "authorized_calls": {"user", "model"}}, "seed"),  # own names go first
    ({"authorized_calls": {"user", "model"}}, "fork"),
    ({"limited_calls": {"user", "model"}}, "fork"),
    ({"authorized_calls": {"user", "group"}, "authorized_token_hits": {"user", "group"}}, "fork"),  # its token metric
    ({"authorized_calls": {"user", "model"}, "authorized_hits": {"user"}}, "fork"),  # its label facts
    ({"authorized_calls": {"user", "group"}, "authorized_hits": {"user"}}, "telemetry"),
    ({"authorized_calls": {"user", "group"}}, "telemetry"),
    ({"authorized_calls": {"user"}}, "telemetry"),  # any labels fit a TelemetryPolicy's
    ({"authorized_calls": {"user", "model", "group"}}, "telemetry"),
    ({"authorized_calls": {"user", "tier"}, "limited_calls": {"user", "tier"}}, "telemetry"),
])
def test_each_built_in_schema_is_detected_from_its_series(series: dict[str, set[str]], expected: str) -> None:
    assert detect_schema(series) is SCHEMAS[expected]


@pytest.mark.parametrize("series", [{}, {"limitador_up": set()}, {"authorized_hits": {"user"}},
                                    {"authorized_token_hits": {"user", "model"}}, {"my_authorized_calls": {"user"}}])
def test_no_schema_fits_series_without_an_authorized_or_limited_counter(series: dict[str, set[str]]) -> None:
    assert detect_schema(series) is None


@pytest.mark.usefixtures("registry")
def test_a_registered_schema_is_served_detected_and_listed() -> None:
    assert register_schema(MINE) is MINE
    assert schema_named("mine") is MINE and SCHEMAS["mine"] is MINE and list(SCHEMAS.values())[-1] is MINE
    assert detect_schema({"my_authorized_calls": {"user", "tenant"}, "my_token_hits": {"user"}}) is MINE
    assert detect_schema({"my_limited_calls": {"user"}}) is MINE
    assert detect_schema({SEED_A: {"user", "group"}}) is SCHEMAS["seed"]  # the built-ins still detected
    assert candidate_metrics()[-3:] == ("my_authorized_calls", "my_limited_calls", "my_token_hits")
    assert [s.name for s in detection_order()] == ["seed", "mine", "fork", "telemetry"]


@pytest.mark.usefixtures("registry")
def test_a_schema_sharing_names_is_told_apart_by_its_label_facts() -> None:
    tenant = register_schema(MetricSchema("tenant", "authorized_calls", "limited_calls", None,
                                          "upstream names, a fixed tenant label", group_label="tenant"))
    assert [s.name for s in detection_order()] == ["seed", "fork", "tenant", "telemetry"]
    assert detect_schema({"authorized_calls": {"user", "tenant"}}) is tenant
    assert detect_schema({"authorized_calls": {"user", "model"}}) is SCHEMAS["fork"]
    assert detect_schema({"authorized_calls": {"user"}}) is SCHEMAS["telemetry"]


@pytest.mark.usefixtures("registry")
def test_registering_a_name_twice_or_an_empty_metric_name_is_a_one_line_error() -> None:
    register_schema(MINE)
    with pytest.raises(ValueError) as duplicate:
        register_schema(MetricSchema("mine", "a", "b", None, "another"))
    assert str(duplicate.value) == "metric schema 'mine' is already registered"
    with pytest.raises(ValueError) as builtin:
        register_schema(SCHEMAS["seed"])
    assert str(builtin.value) == "metric schema 'seed' is already registered"
    for empty in (MetricSchema("x", "", "b", None, ""), MetricSchema("x", "a", "", None, ""),
                  MetricSchema("x", "a", "b", "", "")):
        with pytest.raises(ValueError) as error:
            register_schema(empty)
        assert str(error.value) == "metric schema 'x': its name and metric names must be non-empty"
    assert schema_named("mine") is MINE and "x" not in SCHEMAS


def test_the_registry_is_read_only_from_outside_and_names_its_schemas_on_a_miss() -> None:
    with pytest.raises(TypeError):
        SCHEMAS["mine"] = MINE  # type: ignore[index]
    with pytest.raises(ValueError, match=r"^unknown metric schema 'nope': choose one of seed, fork, telemetry$"):
        schema_named("nope")


def test_the_fixture_restored_the_registry() -> None:
    assert [s.name for s in SCHEMAS.values()] == ["seed", "fork", "telemetry"]
