"""Verification on synthetic snapshots: copies and replicas, absent series, resets, groups on the bill, the
namespace, reconciliation bounds, and the state before the run from /counters and from history."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_plan import DEPLOY, write

from chargeback.counters import Snapshot, deduplicated, increases, per_user, walk
from chargeback.expectations import Prior
from chargeback.ledger import AUTHORIZED, DECIDED, LIMITED, MAYBE, NOT_REACHED, Ledger, Timeline
from chargeback.plan import Rate, load_plan
from chargeback.prior import _replay, from_counters
from chargeback.reconcile import counted, foreign_range
from chargeback.record import RunRecord
from chargeback.schema import SCHEMAS, detect_schema
from chargeback.summary import PlanSummary
from chargeback.verify import VerifyError, gather, verify

NS = {"limitador_namespace": "llm/vllm-httproute"}
A, L = "authorized_calls_with_user_and_group", "limited_calls_with_user_and_group"
FREE = Rate("free-user-requests", 2, 120.0)


def series(metric: str, user: str, value: float, **labels: str) -> tuple[dict[str, str], float]:
    return {"__name__": metric, **NS, "user": user, **labels}, value


def snapshot(*items: tuple[dict[str, str], float], at: float = 0.0) -> Snapshot:
    grouped: dict = {}
    for labels, value in items:
        grouped.setdefault(labels["__name__"], []).append((labels, value))
    return Snapshot("http://prom", at, grouped, covers=(1000.0, 1000.0))


def record(tmp_path: Path, *events: tuple[str, str, int]) -> RunRecord:
    plan = load_plan([DEPLOY])
    rec = RunRecord.start(tmp_path, {"scenario": "seed-demo"}, PlanSummary.of(plan))
    ledger = Ledger()
    for n, (user, tier, status) in enumerate(events):
        ledger.record(user, tier, 100.0 + n, 100.01 + n, status)
    rec.finish(ledger, complete=True)
    return RunRecord.load(rec.path)


def fresh(*users: str) -> dict[str, Prior]:
    return {u: Prior.fresh([FREE], 0.0) for u in users}


def test_copies_of_one_scrape_count_once_and_replicas_add_up() -> None:
    copies = [({"__name__": A, "job": "limitador", "instance": "a:8080", **NS, "user": "u"}, 8.0),
              ({"__name__": A, "job": "limitador-copy", "instance": "a:8080", **NS, "user": "u"}, 8.0),
              ({"__name__": A, "prometheus_replica": "b", "instance": "a:8080", **NS, "user": "u"}, 7.0)]
    assert len(deduplicated(copies)) == 1
    assert per_user(increases([], copies), "user") == {"u": 8.0}
    replicas = [({"__name__": A, "job": "limitador", "instance": "a:8080", **NS, "user": "u"}, 2.0),
                ({"__name__": A, "job": "limitador", "instance": "b:8080", **NS, "user": "u"}, 2.0),
                ({"__name__": A, "job": "copy", "instance": "b:8080", **NS, "user": "u"}, 2.0)]
    assert per_user(increases([], replicas), "user") == {"u": 4.0}
    pods = [({"__name__": A, "instance": "10.0.0.5:8080", "pod": "limitador-0", **NS, "user": "u"}, 3.0),
            ({"__name__": A, "instance": "10.0.0.5:8081", "pod": "limitador-0", **NS, "user": "u"}, 3.0)]
    assert per_user(increases([], pods), "user") == {"u": 3.0}  # one pod read through two ports


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
    v = verify(rec, before, after, resets={}, priors=fresh("freeuser1"))
    assert (v.schema, v.namespace) == (SCHEMAS["seed"], "llm/vllm-httproute")
    free = v.users["freeuser1"]
    assert (free.group, free.billed, free.server_authorized, free.server_limited, free.resets) == (
        "free", {"free"}, 2, 3, 0)
    assert free.counted.allows(2, 3) and not free.counted.allows(3, 2) and not free.counted.allows(2, 4)
    assert free.prediction is not None and (free.prediction.authorized, free.prediction.limited) == ((2, 2), (3, 3))
    assert free.explanation is not None and free.explanation.consistent is True
    assert free.bounds == {"free-user-requests (2 per 120 s)": (2, 1)}
    assert set(v.users) == {"freeuser1", "(missing key)"}  # premiumuser1's counter did not move
    assert v.users["(missing key)"].tier is None and v.group_fallback == []
    _, counted_free, server_a, server_l = v.groups["free"]
    assert (counted_free.authorized, counted_free.limited, server_a, server_l) == ((2, 2), (3, 3), 2, 3)


def test_a_counter_shared_by_identities_leaves_the_model_undecided(tmp_path: Path) -> None:
    shared = (DEPLOY / "rate-limit-policy.yaml").read_text().replace(
        "        - expression: auth.identity.userid", "        - expression: auth.identity.groups")
    write(tmp_path, "rate-limit-policy.yaml", shared)
    plan = load_plan([DEPLOY / "api-keys.yaml", DEPLOY / "auth-policy.yaml", tmp_path / "rate-limit-policy.yaml"])
    rec = RunRecord.start(tmp_path / "runs", {"scenario": "seed-demo"}, PlanSummary.of(plan))
    ledger = Ledger()
    ledger.record("freeuser1", "free", 100.0, 100.01, 200)
    rec.finish(ledger, complete=True)
    v = verify(RunRecord.load(rec.path), snapshot(), snapshot(series(A, "freeuser1", 1.0, group="free")), resets={})
    free = v.users["freeuser1"]
    assert (free.prediction, free.bounds) == (None, {})
    assert free.explanation is not None and (free.explanation.consistent, free.explanation.why) == (
        None, "a counter is shared with freeuser2, and the model follows one identity at a time")


def test_a_user_billed_under_another_group_is_seen_on_both_sides(tmp_path: Path) -> None:
    rec = record(tmp_path, *[("premiumuser1", "premium", 200)] * 3, ("freeuser1", "free", 200))
    after = snapshot(series(A, "premiumuser1", 3.0, group="free"), series(A, "freeuser1", 1.0, group="free"))
    v = verify(rec, snapshot(), after, resets={})
    premium = v.users["premiumuser1"]
    assert (premium.billed, premium.allowed_groups, premium.group) == ({"free"}, {"premium"}, "free")
    assert v.groups["free"][2:] == (4, 0) and v.groups["free"].counted.authorized == (1, 1)
    assert v.groups["premium"][2:] == (0, 0) and v.groups["premium"].counted.authorized == (3, 3)
    split = snapshot(series(A, "premiumuser1", 2.0, group="premium"), series(L, "premiumuser1", 1.0, group="free"))
    assert verify(rec, snapshot(), split, resets={}).users["premiumuser1"].billed == {"premium", "free"}


def test_missing_group_label_falls_back_to_the_plans_tier(tmp_path: Path) -> None:
    rec = record(tmp_path, ("premiumuser2", "premium", 200))
    v = verify(rec, snapshot(), snapshot(series("authorized_calls", "premiumuser2", 1.0, model="m")), resets={})
    assert v.schema == SCHEMAS["fork"]
    assert (v.users["premiumuser2"].group, v.users["premiumuser2"].billed, v.group_fallback) == (
        "premium", set(), ["premiumuser2"])
    assert v.groups["premium"].authorized == 1


def test_series_of_other_routes_are_left_out_and_several_need_a_namespace(tmp_path: Path) -> None:
    rec = record(tmp_path, ("freeuser1", "free", 200))
    other = {"limitador_namespace": "llm/other-route"}
    after = snapshot(series(A, "freeuser1", 1.0, group="free"),
                     ({"__name__": A, **other, "user": "freeuser1", "group": "free"}, 5.0))
    with pytest.raises(VerifyError, match=r"several limitador_namespace values \(llm/other-route, "
                                          r"llm/vllm-httproute\); --namespace names"):
        verify(rec, snapshot(), after, resets={})
    v = verify(rec, snapshot(), after, resets={}, namespace="llm/vllm-httproute")
    assert v.users["freeuser1"].server_authorized == 1


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


def test_walk_counts_raw_increases_through_restarts_without_extrapolation() -> None:
    scrapes = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert walk([(1.0, 5.0), (2.0, 7.0), (3.0, 7.0)], 4.0, scrapes) == (3.0, 0, [(1.0, 1.0), (2.0, 3.0), (3.0, 3.0)])
    assert walk([(2.0, 2.0), (3.0, 3.0)], None, scrapes)[:2] == (3.0, 0)  # born in the range: counts from 0
    assert walk([(1.0, 9.0), (2.0, 1.0), (3.0, 4.0)], 9.0, scrapes)[:2] == (4.0, 1)  # a fall
    assert walk([(1.0, 3.0), (5.0, 3.0), (6.0, 4.0)], 3.0, scrapes)[:2] == (4.0, 1)  # missing at 2-4: a restart


def test_reconciliation_bounds_follow_what_each_request_became() -> None:
    outcomes = Timeline.of([(1.0, 1.1, AUTHORIZED, 0), (2.0, 2.1, LIMITED, 0), (3.0, 9.0, DECIDED, 0),
                            (4.0, 4.05, MAYBE, 1), (5.0, 5.1, NOT_REACHED, 0)])
    c = counted(outcomes, (10.0, 10.0))
    assert (c.authorized, c.limited, c.either, c.total) == ((1, 1), (1, 1), (1, 2), (3, 4))
    assert c.allows(2, 1) and c.allows(1, 2) and c.allows(2, 2) and c.allows(3, 1)
    assert not c.allows(1, 1)  # the decided request was not counted: fail-open or a dropped increment
    assert not c.allows(2, 3) and not c.allows(0, 3)
    early = counted(outcomes, (2.05, 3.02))  # read while requests were in flight
    assert (early.authorized, early.limited, early.either) == ((1, 1), (0, 1), (0, 1))
    assert counted(outcomes, (10.0, 10.0), open_ended=True).expected("authorized") == "1.."


def test_foreign_calls_are_placed_in_the_scrape_intervals_that_show_them() -> None:
    outcomes = Timeline.of([(10.0, 10.1, AUTHORIZED, 0), (10.2, 10.3, AUTHORIZED, 0), (10.2, 10.3, NOT_REACHED, 0)])
    assert foreign_range([(9.0, 11.0, 2), (11.0, 12.0, 1), (12.0, 13.0, 0)], outcomes) == (11.0, 12.0)
    assert foreign_range([(9.0, 11.0, 2)], outcomes) is None


def test_the_state_before_the_run_from_limitadors_counters() -> None:
    premium = Rate("premium-user-requests", 10, 120.0)
    variable = 'descriptors[0]["auth.identity.userid"]'
    entry = {"limit": {"id": None, "namespace": "llm/vllm-httproute", "max_value": 10, "seconds": 120,
                       "name": "premium-user-requests", "conditions": [], "variables": [variable]},
             "set_variables": {variable: "premiumuser1"}, "remaining": 2, "expires_in_seconds": 97}
    other = {**entry, "set_variables": {variable: "premiumuser2"}, "remaining": 2**64 - 3}  # pushed past its max
    reading = {"counters": [entry, other], "read": [1000.0, 1000.5]}
    counters, values = {"premium-user-requests": ["auth.identity.userid"]}, {"premium-user-requests": ["premiumuser1"]}
    prior = from_counters(reading, [premium], counters, values)
    assert prior.states == (((977.0, 978.5, 8, 8),),) and prior.at == 1000.0
    assert from_counters(reading, [premium], counters, {"premium-user-requests": ["premiumuser2"]}).states[0][0][2:] == (10, 10)
    assert from_counters(reading, [premium], counters, {"premium-user-requests": ["nobody"]}).states == ((None,),)


def test_the_state_before_the_run_from_the_counters_history() -> None:
    target = ("limitador", "127.0.0.1:8000")
    scrapes = {target: [float(t) for t in range(100, 131)]}
    key = (target, (("", "127.0.0.1:8000"), ("user", "freeuser1")))
    # absent until 110 (a fresh Limitador), 2 calls in (110, 111], nothing more: the window opened then is full
    prior = _replay([FREE], scrapes, {key: [(float(t), 2.0) for t in range(111, 131)]}, 130.5)
    assert prior.exact and prior.states == (((110.0, 111.0, 2, 2),),)
    # the series was there from the first scrape: nothing tells when its window opened
    assert not _replay([FREE], scrapes, {key: [(float(t), 2.0) for t in range(100, 131)]}, 130.5).exact
    # restarted at 120 (gone from the scrapes, back at 125 with 1 call): only the call after the restart counts
    restarted = [(float(t), 2.0) for t in range(111, 120)] + [(float(t), 1.0) for t in range(125, 131)]
    assert _replay([FREE], scrapes, {key: restarted}, 130.5).states == (((124.0, 125.0, 1, 1),),)
    # no scrape before the run at all
    assert not _replay([FREE], {target: []}, {}, 130.5).exact


def test_the_state_before_the_run_kept_in_the_record_is_used_without_prometheus(tmp_path: Path) -> None:
    kept = Prior((((30.0, 31.0, 2, 2),),), 100.0, "the counters' history in Prometheus before the run")
    rec = RunRecord.start(tmp_path, {"scenario": "seed-demo", "prior": {"freeuser1": kept.to_dict()}},
                          PlanSummary.of(load_plan([DEPLOY])),
                          {"before": snapshot(at=90.0), "after": snapshot(series(L, "freeuser1", 1.0), at=200.0)})
    ledger = Ledger()
    ledger.record("freeuser1", "free", 100.0, 100.01, 429)
    rec.finish(ledger, complete=True)
    free = gather(rec.path).users["freeuser1"]
    assert free.prior == kept and free.explanation is not None and free.explanation.consistent is True
    assert free.prediction is not None and (free.prediction.authorized, free.prediction.limited) == ((0, 0), (1, 1))
