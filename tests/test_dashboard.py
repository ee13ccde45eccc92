"""The Grafana dashboard against the stand-in's Prometheus with the schema's recording rules loaded: after the seed's
traffic every panel's expression is accepted and returns data, and the per-tier numbers are exact."""
from __future__ import annotations

import json
import time

import pytest
from test_gateway import SEED
from test_plan import DEPLOY, ROOT
from test_stack_e2e import post

from chargeback.prometheus import PrometheusSource
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DASHBOARD = ROOT / "deploy" / "grafana" / "chargeback-dashboard.json"


def panel_exprs() -> list[tuple[str, str]]:
    """(panel title, expr) for every target of every panel, rows' nested panels included."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    panels += [nested for panel in panels for nested in panel.get("panels", [])]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])]


def by_tier(source: PrometheusSource, query: str) -> dict[str, float]:
    return {labels["tier"]: value for labels, value in source.vector(query)}


def wait_for_rules(source: PrometheusSource, timeout: float = 30.0) -> None:
    """Block until the recording rules have seen every authorized call of the seed (bounded)."""
    deadline = time.monotonic() + timeout
    while by_tier(source, "chargeback:calls:by_tier").get("premium") != 14:
        assert time.monotonic() < deadline, f"chargeback:calls:by_tier never reached premium 14 in {timeout:g}s"
        time.sleep(0.5)


def test_dashboard_uses_recording_rules_only() -> None:
    exprs = panel_exprs()
    assert len(exprs) >= 6
    assert all(expr.startswith("chargeback:") and "$" not in expr for _, expr in exprs), exprs


@pytest.mark.parametrize("schema", ["seed", "fork", "telemetry"])
def test_every_panel_returns_data_after_the_seed_traffic(schema: str) -> None:
    rules = ROOT / "deploy" / "prometheus" / f"chargeback-rules-{schema}.yaml"
    with LocalStack([str(DEPLOY)], schema=schema, rule_files=[str(rules)]) as stack:
        statuses = {user: [post(stack.gateway_url, f"{user}_key") for _ in range(n)] for user, n in SEED}
        source = PrometheusSource(stack.prometheus_url)
        wait_for_rules(source)
        time.sleep(1.5)  # one more evaluation, so every rule of the group has seen the last scrape
        empty = [(title, expr) for title, expr in panel_exprs() if not source.vector(expr)]
        calls = by_tier(source, "chargeback:calls:by_tier")
        cost = by_tier(source, "chargeback:cost:by_tier")
        ratio = by_tier(source, "chargeback:limited_ratio:by_tier")
        limited = {labels["user"]: value for labels, value in source.vector("chargeback:limited_calls:by_user")}
    assert statuses["freeuser1"] == [200, 200, 429, 429, 429]
    assert empty == []
    assert calls == {"premium": 14, "free": 2}
    assert cost == pytest.approx({"premium": 0.028, "free": 0.002}, rel=1e-12)
    assert ratio == {"premium": 0, "free": 0.6}
    assert limited == {"freeuser1": 3}
