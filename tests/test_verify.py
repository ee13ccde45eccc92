"""Verification on synthetic snapshots: duplicates, absent series, resets, group fallback, schema detection."""
from __future__ import annotations

from pathlib import Path

import pytest

from chargeback.counters import Snapshot, deduplicated, increases, per_user
from chargeback.ledger import Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.schema import SCHEMAS, detect_schema
from chargeback.verify import VerifyError, verify
from sim.faults import Faults
from test_plan import DEPLOY

NS = {"limitador_namespace": "llm/vllm-httproute"}


def series(metric: str, user: str, value: float, **labels: str) -> tuple[dict[str, str], float]:
    return {"__name__": metric, **NS, "user": user, **labels}, value


def snapshot(*items: tuple[dict[str, str], float], at: float = 0.0) -> Snapshot:
    grouped: dict = {}
    for labels, value in items:
        grouped.setdefault(labels["__name__"], []).append((labels, value))
    return Snapshot("http://prom", at, grouped)


def record(tmp_path: Path, *events: tuple[str, str, int]) -> RunRecord:
    plan = load_plan([DEPLOY])
    rec = RunRecord.start(tmp_path, {"scenario": "seed-demo", "plan": plan.describe(), "expected": {}})
    ledger = Ledger()
    for n, (user, tier, status) in enumerate(events):
        ledger.record(user, tier, 100.0 + n, 100.01 + n, status)
    rec.finish(ledger, complete=True)
    return RunRecord.load(rec.path)


A, L = "authorized_calls_with_user_and_group", "limited_calls_with_user_and_group"


def test_duplicate_series_from_two_jobs_count_once() -> None:
    items = [({"__name__": A, "job": "limitador", **NS, "user": "u"}, 8.0),
             ({"__name__": A, "job": "limitador-copy", **NS, "user": "u"}, 8.0),
             ({"__name__": A, "prometheus_replica": "b", **NS, "user": "u"}, 7.0)]
    assert len(deduplicated(items)) == 1
    assert per_user(increases([], items), "user") == {"u": 8.0}


def test_increases_count_absent_as_zero_and_show_a_reset_as_negative() -> None:
    before = [series(A, "a", 5.0, model="m1"), series(A, "b", 9.0)]
    after = [series(A, "a", 7.0, model="m1"), series(A, "a", 3.0, model="m2"), series(A, "b", 2.0)]
    assert per_user(increases(before, after), "user") == {"a": 5.0, "b": -7.0}


def test_verify_compares_server_increases_with_the_ledger(tmp_path: Path) -> None:
    rec = record(tmp_path, *[("freeuser1", "free", 200)] * 2, *[("freeuser1", "free", 429)] * 3,
                 ("(missing key)", "(invalid key)", 401))
    before = snapshot(series(A, "premiumuser1", 4.0, group="premium"))
    after = snapshot(series(A, "premiumuser1", 4.0, group="premium"), series(A, "freeuser1", 2.0, group="free"),
                     series(L, "freeuser1", 3.0, group="free"))
    v = verify(rec, before, after, resets={})
    assert v.schema == SCHEMAS["seed"]
    free = v.users["freeuser1"]
    assert (free.group, free.server_authorized, free.server_limited, free.resets) == ("free", 2, 3, 0)
    assert free.expectation is not None and free.expectation.authorized == (2, 2)
    assert set(v.users) == {"freeuser1", "(missing key)"}  # premiumuser1's counter did not move
    assert v.users["(missing key)"].tier is None and v.group_fallback == []


def test_missing_group_label_falls_back_to_the_plans_tier(tmp_path: Path) -> None:
    rec = record(tmp_path, ("premiumuser2", "premium", 200))
    v = verify(rec, snapshot(), snapshot(series("authorized_calls", "premiumuser2", 1.0, model="m")), resets={})
    assert v.schema == SCHEMAS["fork"]
    assert (v.users["premiumuser2"].group, v.group_fallback) == ("premium", ["premiumuser2"])


def test_resets_are_reported_per_user(tmp_path: Path) -> None:
    rec = record(tmp_path, ("freeuser1", "free", 200))
    before = snapshot(series(A, "freeuser1", 5.0, group="free"))
    after = snapshot(series(A, "freeuser1", 1.0, group="free"))
    assert verify(rec, before, after, resets={}).users["freeuser1"].resets == 1
    assert verify(rec, snapshot(), after, resets={"freeuser1": 2}).users["freeuser1"].resets == 2


def test_no_chargeback_metrics_is_a_clear_error_unless_nothing_reached_the_limiter(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match=r"^http://prom: no chargeback metrics with a user label \(looked for "):
        verify(record(tmp_path / "a", ("freeuser1", "free", 200)), snapshot(), snapshot(), resets={})
    rejected = verify(record(tmp_path / "b", ("(missing key)", "(invalid key)", 401)), snapshot(), snapshot(), resets={})
    assert rejected.users["(missing key)"].server_authorized == 0


def test_schema_detection() -> None:
    assert detect_schema({A: {"user", "group"}}) == SCHEMAS["seed"]
    assert detect_schema({"authorized_calls": {"user", "model"}}) == SCHEMAS["fork"]
    assert detect_schema({"authorized_calls": {"user", "group"}, "authorized_hits": {"user"}}) == SCHEMAS["telemetry"]
    assert detect_schema({"limitador_up": set()}) is None


def test_fault_specs() -> None:
    faults = Faults.parse(["over-limit:freeuser1", "double-count", "no-group", "reset-after:16"])
    assert (faults.pending, faults.no_group, faults.reset_after) == (
        {"over-limit": "freeuser1", "double-count": None}, True, 16)
    assert not faults.take("over-limit", "premiumuser1") and faults.take("over-limit", "freeuser1")
    assert not faults.take("over-limit", "freeuser1")
    with pytest.raises(ValueError, match=r"^--fault 'reset-after:soon': expected one of "):
        Faults.parse(["reset-after:soon"])


def test_walk_counts_raw_increases_through_restarts_without_extrapolation() -> None:
    from chargeback.counters import walk
    scrapes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert walk([(1.0, 5.0), (2.0, 7.0), (3.0, 7.0)], 4.0, scrapes) == (3.0, 0, [(1.0, 1.0), (2.0, 3.0), (3.0, 3.0)])
    assert walk([(2.0, 2.0), (3.0, 3.0)], None, scrapes)[:2] == (3.0, 0)  # born in the range: counts from 0
    assert walk([(1.0, 9.0), (2.0, 1.0), (3.0, 4.0)], 9.0, scrapes)[:2] == (4.0, 1)  # a fall
    assert walk([(1.0, 3.0), (5.0, 3.0), (6.0, 4.0)], 3.0, scrapes)[:2] == (4.0, 1)  # missing at 2-4: a restart
