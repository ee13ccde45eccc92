"""Token chargeback: prices per tier and model, per call and per input/output token; per-model usage in the ledger
(merged across workers, kept in the run record); per-model costs in the report and the live tab; the labels each
metric really carries (a response-body `model` on the token metrics only) and `report_calls`."""
from __future__ import annotations

import os

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"  # importing Locust must not gevent-patch the whole test session
import locust  # noqa: E402,F401,I001

import csv  # noqa: E402
import json  # noqa: E402
import zipfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from test_gateway import NS, complete, samples  # noqa: E402
from test_locust_e2e import run_locust  # noqa: E402
from test_plan import DEPLOY, MANIFESTS, limit_policy, secret, write  # noqa: E402
from test_verify import record, series, snapshot  # noqa: E402

from chargeback.ledger import Ledger  # noqa: E402
from chargeback.manifests import ManifestError  # noqa: E402
from chargeback.plan import Price, load_plan  # noqa: E402
from chargeback.record import LEDGER_FILE, RunRecord, read_ledger, write_ledger_atomic  # noqa: E402
from chargeback.report import SERVER_DIFFERENCE, from_run, price_list  # noqa: E402
from chargeback.report_files import MODEL_COLUMNS, write_all  # noqa: E402
from chargeback.schema import SCHEMAS  # noqa: E402
from chargeback.summary import PlanSummary  # noqa: E402
from chargeback.verify import verify  # noqa: E402
from sim.gateway import Gateway  # noqa: E402
from sim.model import ModelConfig, ModelSimulator  # noqa: E402
from sim.stack import LocalStack  # noqa: E402
from users.webui import table_json  # noqa: E402

MODEL_A, MODEL_B = "model-a", "org/model-b"
PRICES = f"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: prices
  namespace: llm
  labels: {{chargeback.kuadrant.io/prices: "true"}}
data:
  free.per_call: "0.001"
  free.per_1k_tokens: "0.5"
  premium.per_call: "0.002"
  premium.per_1k_input_tokens: "0.5"
  premium.per_1k_output_tokens: "1"
  premium.models: |
    {MODEL_B}: {{per_call: "0.01", per_1k_output_tokens: "2"}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    """The demo's keys, auth and limits with the prices above (premium: input/output and a price for model B)."""
    folder = tmp_path / "policy"
    folder.mkdir()
    for name in ("api-keys.yaml", "auth-policy.yaml", "rate-limit-policy.yaml"):
        (folder / name).write_text((DEPLOY / name).read_text())
    write(folder, "prices.yaml", PRICES)
    return folder


def test_prices_per_tier_model_and_input_output_tokens(policy: Path) -> None:
    tiers = load_plan([policy]).tiers
    assert tiers["free"].price == Price(per_call=0.001, per_1k_tokens=0.5)
    premium = tiers["premium"].price
    assert premium.for_model(MODEL_A) is premium  # no price of its own: the tier's
    assert (premium.per_call, premium.per_1k_tokens, premium.per_1k_input_tokens, premium.per_1k_output_tokens) == (
        0.002, 0.0, 0.5, 1.0)
    assert premium.for_model(MODEL_B) == Price(0.01, 0.0, 0.5, 2.0)  # its own units over the tier's
    # 3 calls, 9 input and 30 output tokens: 0.006 + 0.0045 + 0.03; model B's 2 calls, 6 in, 40 out: 0.02+0.003+0.08
    assert round(premium.for_model(MODEL_A).cost(3, 39, 9, 30), 9) == 0.0405
    assert round(premium.for_model(MODEL_B).cost(2, 46, 6, 40), 9) == 0.103
    assert round(tiers["free"].price.cost(2, 46, 6, 40), 9) == 0.025  # per 1000 total tokens
    summary = PlanSummary.of(load_plan([policy]))
    assert PlanSummary.from_dict(summary.to_dict()).tiers["premium"].price == premium
    assert Price.from_dict({"per_call": 0.5, "per_1k_tokens": 1}) == Price(0.5, 1.0)  # a record of older versions


@pytest.mark.parametrize("data, message", [
    ('premium.models: "[a, b]"', "data.premium.models: expected a YAML mapping of model -> {unit: amount}, e.g. "
                                 "'my-model: {per_1k_input_tokens: 0.001}'"),
    ('premium.models: "m: {per_token: 1}"', "data.premium.models.m.per_token: expected a unit, one of per_call, "
                                            "per_1k_tokens, per_1k_input_tokens, per_1k_output_tokens"),
    ('premium.models: "m: {per_call: cheap}"', "data.premium.models.m.per_call: expected a number, got 'cheap'"),
    ('premium.per_1k_output_tokens: "-1"', "data.premium.per_1k_output_tokens: expected a price >= 0, got '-1'"),
])
def test_a_bad_price_is_one_line_naming_the_file_and_key(tmp_path: Path, data: str, message: str) -> None:
    path = write(tmp_path, "prices.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  namespace: llm\n"
                                          "  labels: {chargeback.kuadrant.io/prices: 'true'}\n"
                                          f"data:\n  {data}\n")
    with pytest.raises(ManifestError) as caught:
        load_plan([path])
    assert str(caught.value) == f"{path}: ConfigMap llm/p: {message}"


def test_command_line_overrides_set_a_unit_for_every_model_of_the_tier(policy: Path) -> None:
    tiers = {name: tier.price for name, tier in load_plan([policy]).tiers.items()}
    prices = price_list(tiers, {"per_call": {"premium": 0.1}, "per_1k_input_tokens": {"gold": 3.0}})
    assert prices["premium"].for_model(MODEL_B) == Price(0.1, 0.0, 0.5, 2.0)
    assert prices["premium"].for_model(MODEL_A).per_call == 0.1
    assert prices["gold"] == Price(per_1k_input_tokens=3.0) and prices["free"] == tiers["free"]


def two_models(ledger: Ledger, user: str = "premiumuser1", tier: str = "premium", start: float = 100.0) -> None:
    """3 answers of model A (3 in, 10 out), 2 of model B (3 in, 20 out), a 429, and a 500 of model B."""
    for n in range(3):
        ledger.record(user, tier, start + n, start + n + 0.1, 200, (3, 10, 13), n, MODEL_A)
    for n in range(2):
        ledger.record(user, tier, start + 3 + n, start + 3.1 + n, 200, (3, 20, 23), n, MODEL_B)
    ledger.record(user, tier, start + 6, start + 6.1, 429, None, 0, MODEL_B)
    ledger.record(user, tier, start + 7, start + 7.1, 500, None, 0, MODEL_B)


def test_per_model_usage_merges_exactly_across_two_workers() -> None:
    one, first, second, master = Ledger(), Ledger(), Ledger(), Ledger()
    two_models(one)
    two_models(one, start=200.0)
    two_models(first)
    master.merge(first.drain())
    two_models(second, start=200.0)
    master.merge(second.drain())
    expected = {MODEL_A: [6, 6, 18, 60, 78], MODEL_B: [6, 4, 12, 80, 92]}  # calls, reports, in, out, total
    assert master.accounts["premiumuser1"].models == one.accounts["premiumuser1"].models == expected
    assert first.accounts == {} and master.accounts["premiumuser1"].authorized == 12


def test_the_record_keeps_per_model_usage_and_an_older_one_reads_without(tmp_path: Path) -> None:
    ledger = Ledger()
    two_models(ledger)
    ledger.record("freeuser1", "free", 100.0, 100.1, 401)
    path = tmp_path / LEDGER_FILE
    write_ledger_atomic(path, ledger)
    read = read_ledger(path)
    assert {u: a.models for u, a in read.accounts.items()} == {
        "premiumuser1": {MODEL_A: [3, 3, 9, 30, 39], MODEL_B: [3, 2, 6, 40, 46]}, "freeuser1": {}}
    old = tmp_path / "old.npz"  # the same file without the per-model table, as older versions wrote it
    with zipfile.ZipFile(path) as new, zipfile.ZipFile(old, "w") as out:
        for name in new.namelist():
            if not name.startswith("model_"):
                out.writestr(name, new.read(name))
    account = read_ledger(old).accounts["premiumuser1"]
    assert account.models == {} and account.model_usage() == {"": [6, 5, 15, 70, 85]}  # its totals, no model


def premium_record(tmp_path: Path, policy: Path, server_authorized: float) -> RunRecord:
    rec = RunRecord.start(tmp_path / "runs", {"scenario": "two-models"}, PlanSummary.of(load_plan([policy])))
    ledger = Ledger()
    two_models(ledger)
    rec.snapshots = {"before": snapshot(), "after": snapshot(
        series("authorized_calls_with_user_and_group", "premiumuser1", server_authorized, group="premium"),
        series("limited_calls_with_user_and_group", "premiumuser1", 1.0, group="premium"))}
    rec.finish(ledger, complete=True)
    return rec


def test_the_report_prices_each_model_and_writes_the_breakdown(tmp_path: Path, policy: Path) -> None:
    report = from_run(str(premium_record(tmp_path, policy, 6.0).path), {}, {})
    [user] = report.users
    # A: 3 calls x 0.002 + 9 in x 0.5/1000 + 30 out x 1/1000; B: 3 calls x 0.01 + 6 in x 0.5/1000 + 40 out x 2/1000
    assert [(m.model, m.calls, m.reports, m.prompt_tokens, m.completion_tokens, m.cost) for m in user.models] == [
        (MODEL_A, 3, 3, 9, 30, 0.0405), (MODEL_B, 3, 2, 6, 40, 0.113)]
    assert (user.cost, user.authorized, report.flags) == (0.1535, 6, [])
    csv_path, json_path, html_path, models_path = write_all(report, tmp_path / "out")
    rows = list(csv.DictReader(models_path.open()))
    assert list(rows[0]) == MODEL_COLUMNS
    assert [(r["model"], r["calls"], r["cost"]) for r in rows] == [(MODEL_A, "3", "0.040500000"),
                                                                    (MODEL_B, "3", "0.113000000")]
    data = json.loads(json_path.read_text())
    assert data["models"] == [
        {"group": "premium", "model": MODEL_A, "users": 1, "calls": 3, "reports": 3, "prompt_tokens": 9,
         "completion_tokens": 30, "total_tokens": 39, "cost": 0.0405},
        {"group": "premium", "model": MODEL_B, "users": 1, "calls": 3, "reports": 2, "prompt_tokens": 6,
         "completion_tokens": 40, "total_tokens": 46, "cost": 0.113}]
    assert data["tiers"][0]["cost"] == 0.1535 and list(csv.DictReader(csv_path.open()))[0]["cost"] == "0.153500"
    assert "<h2>Per tier and model</h2>" in html_path.read_text() and f"<td>{MODEL_B}</td>" in html_path.read_text()


def test_calls_only_the_server_counted_are_priced_at_the_tiers_price(tmp_path: Path, policy: Path) -> None:
    report = from_run(str(premium_record(tmp_path, policy, 8.0).path), {}, {})
    [user] = report.users
    assert [(m.model, m.calls, m.cost) for m in user.models][-1] == (SERVER_DIFFERENCE, 2, 0.004)
    assert user.cost == 0.1575 and report.flags == [
        "premiumuser1: DISAGREES with the ledger: client saw 6 authorized / 1 limited"]


def test_the_live_tab_has_per_model_rows_and_prices_and_starts_again_at_a_reset(policy: Path) -> None:
    plan = load_plan([policy])
    summary, ledger = PlanSummary.of(plan), Ledger()
    two_models(ledger)
    table = table_json(plan, summary, ledger)
    assert table["models"] == [
        {"tier": "premium", "model": MODEL_A, "users": 1, "calls": 3, "reports": 3, "prompt_tokens": 9,
         "completion_tokens": 30, "total_tokens": 39, "cost": 0.0405},
        {"tier": "premium", "model": MODEL_B, "users": 1, "calls": 3, "reports": 2, "prompt_tokens": 6,
         "completion_tokens": 40, "total_tokens": 46, "cost": 0.113}]
    assert table["totals"][0]["cost"] == 0.1535
    baseline = {"premiumuser1": {**table["top_sent"][0],
                                 "models": {m: list(c) for m, c in ledger.accounts["premiumuser1"].models.items()}}}
    ledger.record("premiumuser1", "premium", 300.0, 300.1, 200, (1, 2, 3), 0, MODEL_B)
    assert table_json(plan, summary, ledger, baseline)["models"] == [
        {"tier": "premium", "model": MODEL_B, "users": 1, "calls": 1, "reports": 1, "prompt_tokens": 1,
         "completion_tokens": 2, "total_tokens": 3, "cost": 0.0145}]  # 0.01 + 0.0005 + 0.004


def telemetry_gateway(tmp_path: Path) -> Gateway:
    """Alice (tier free) under a token limit, behind a TelemetryPolicy whose `model` reads the response body."""
    write(tmp_path, "keys.yaml", secret("alice", "free"))
    write(tmp_path, "auth.yaml", (DEPLOY / "auth-policy.yaml").read_text().replace(
        "                groups:\n", "                tier:\n"
        "                  selector: auth.identity.metadata.annotations.kuadrant\\.io/groups\n"
        "                groups:\n"))
    write(tmp_path, "trlp.yaml", limit_policy("free-tokens", "[{limit: 1000, window: 1m}]",
                                              kind="TokenRateLimitPolicy"))
    return Gateway(load_plan([tmp_path, MANIFESTS / "telemetry-policy.yaml"]), SCHEMAS["telemetry"],
                   model=ModelSimulator(ModelConfig((MODEL_A, MODEL_B))))


def test_the_stand_in_labels_the_model_on_the_token_metrics_only(tmp_path: Path) -> None:
    app = telemetry_gateway(tmp_path)
    for model, count in ((MODEL_A, 2), (MODEL_B, 1)):
        for _ in range(count):
            assert complete(app, "alice_key", {"model": model, "prompt": "a b c", "max_tokens": 10}) == 200
    alice = (NS, ("tier", "free"), ("user", "alice"))
    per_model = {model: (NS, ("model", model), ("tier", "free"), ("user", "alice")) for model in (MODEL_A, MODEL_B)}
    got = {key: value for key, value in samples(app).items() if key[0] != "limitador_up"}
    assert got == {("authorized_calls", alice): 3,  # no request limit: the token limit's check counts each
                   ("authorized_hits", per_model[MODEL_A]): 26, ("authorized_hits", per_model[MODEL_B]): 13,
                   ("report_calls", per_model[MODEL_A]): 2, ("report_calls", per_model[MODEL_B]): 1}


def test_labels_are_detected_per_metric_and_report_calls_cross_checked(tmp_path: Path) -> None:
    """The model only on authorized_hits and report_calls, limited_calls without the policy's labels: the schema is
    telemetry, tokens per model and reports are read, and a report the client did not see is flagged."""
    rec = record(tmp_path, *[("freeuser1", "free", 200)] * 2)
    ledger = Ledger()
    ledger.record("freeuser1", "free", 100.0, 100.1, 200, (3, 10, 13), 0, MODEL_A)
    ledger.record("freeuser1", "free", 101.0, 101.1, 200, (3, 20, 23), 0, MODEL_B)
    rec.ledger = ledger
    model = {"group": "free", "model": MODEL_A}
    after = snapshot(series("authorized_calls", "freeuser1", 4.0, group="free"),  # two limiter calls a request
                     series("authorized_hits", "freeuser1", 13.0, **model),
                     series("authorized_hits", "freeuser1", 23.0, group="free", model=MODEL_B),
                     series("report_calls", "freeuser1", 2.0, **model),
                     series("report_calls", "freeuser1", 1.0, group="free", model=MODEL_B),
                     ({"__name__": "limited_calls", "limitador_namespace": "llm/vllm-httproute"}, 4.0))
    rec.plan = PlanSummary.of(load_plan([DEPLOY, write(tmp_path, "trlp.yaml", limit_policy(
        "free-tokens", "[{limit: 1000, window: 1m}]", kind="TokenRateLimitPolicy"))]))
    v = verify(rec, snapshot(), after, {})
    assert v.schema.name == "telemetry"
    assert v.labels["authorized_calls"] == {"__name__", "limitador_namespace", "user", "group"}
    assert "model" in v.labels["authorized_hits"] and v.labels["limited_calls"] == {"__name__", "limitador_namespace"}
    check = v.users["freeuser1"]
    assert (check.server_tokens, check.server_reports, check.server_model_tokens) == (36, 3, {MODEL_A: 13, MODEL_B: 23})
    rec.snapshots = {"before": snapshot(), "after": after}
    rec.save()
    assert from_run(str(rec.path), {}, {}).flags == [
        "freeuser1: REPORTS: the server counted 3 token report(s), the client saw 2 answer(s) with usage"]


@pytest.mark.e2e
@pytest.mark.slow
def test_a_run_with_two_models_is_billed_per_model_exactly(tmp_path: Path, policy: Path) -> None:
    """Locust for real: premiumuser1 asks model A 3 times and model B twice, freeuser1 model B 3 times (the third
    limited); the report's per-model costs are exact and the server agrees with the ledger."""
    scenarios = write(tmp_path, "two.yaml", f"""\
        scenarios:
          - name: two-models
            description: two models
            streams:
              - {{tiers: [premium], pick: [0], requests: 3, pattern: none, model: {MODEL_A}, prompt: a b c,
                 max_tokens: 10}}
              - {{tiers: [premium], pick: [0], requests: 2, pattern: none, model: {MODEL_B}, prompt: a b c,
                 max_tokens: 20}}
              - {{tiers: [free], pick: [0], requests: 3, pattern: none, model: {MODEL_B}, prompt: a b c,
                 max_tokens: 20}}
        """)
    with LocalStack([str(policy)], models=[MODEL_A, MODEL_B]) as stack:
        rec = run_locust(stack.gateway_url, tmp_path / "runs", [policy], "--scenario-file", str(scenarios),
                         "--scenario", "two-models", "--prometheus-url", stack.prometheus_url)
        report = from_run(str(rec.path), {}, {}, stack.prometheus_url)
    assert report.flags == [] and "checked against the client's ledger" in report.source
    rows = {(u.user, m.model): (m.calls, m.prompt_tokens, m.completion_tokens, m.cost)
            for u in report.users for m in u.models}
    assert rows == {("premiumuser1", MODEL_A): (3, 9, 30, 0.0405), ("premiumuser1", MODEL_B): (2, 6, 40, 0.103),
                    ("freeuser1", MODEL_B): (2, 6, 40, 0.025)}  # free: 2 x 0.001 + 46 tokens x 0.5 / 1000
    assert {(u.user, u.authorized, u.limited, u.cost) for u in report.users} == {
        ("premiumuser1", 5, 0, 0.1435), ("freeuser1", 2, 1, 0.025)}
