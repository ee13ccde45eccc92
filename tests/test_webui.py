"""The web UI's server side without a browser: the Chargeback tab's JSON (run id, tiers' limits and prices, currency,
per-tier totals, the top users by calls and by limited, the search by user, limit markers, reset), the CSV of every
user, the page script's injection, the scenario picker's choices, the swarm hook, and the checks'
results read from pytest's JUnit XML."""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"  # importing Locust must not gevent-patch the whole test session
import locust  # noqa: E402,F401,I001

del os.environ["LOCUST_SKIP_MONKEY_PATCH"]  # (the Locust processes the e2e tests start do patch)

import gevent  # noqa: E402
import pytest  # noqa: E402
from flask.testing import FlaskClient  # noqa: E402
from locust.argument_parser import parse_options  # noqa: E402
from locust.env import Environment  # noqa: E402
from test_plan import DEPLOY  # noqa: E402

import users.webui as webui  # noqa: E402
from chargeback.ledger import NO_ANSWER  # noqa: E402
from chargeback.plan import load_plan  # noqa: E402
from chargeback.prometheus import PrometheusAuth  # noqa: E402
from chargeback.pytest_plugin import CheckResult, parse_junit  # noqa: E402
from chargeback.record import RunRecord  # noqa: E402
from scenarios import SCENARIOS  # noqa: E402
from users.run import Run  # noqa: E402

PLAN = load_plan([str(DEPLOY)])
T0 = 1_800_000_000.0


def ui_environment(monkeypatch: pytest.MonkeyPatch, web_login: bool = False) -> Environment:
    """A local runner with the web UI (not serving), the suite's options at their defaults."""
    monkeypatch.setattr(sys, "argv", ["locust"])  # the UI's template reads Locust's options from the command line
    options = parse_options([])
    vars(options).update(scenario="", check=False, tier_weights="", pattern="steady:1/s", duration="",
                         users_per_identity=0)
    environment = Environment(parsed_options=options)
    environment.create_local_runner()
    environment.create_web_ui("127.0.0.1", 0, delayed_start=True, web_login=web_login)
    return environment


@pytest.fixture
def ui(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FlaskClient, Run, Environment]]:
    """A local runner with the web UI (not serving), the suite's Run and tab registered."""
    environment = ui_environment(monkeypatch)
    run = Run.register(environment, PLAN)
    run.record = RunRecord.start(tmp_path / "runs", {"scenario": "seed-demo"}, run.summary)
    webui.register(environment, run)
    yield environment.web_ui.app.test_client(), run, environment
    environment.runner.quit()


def send(run: Run, user: str, tier: str, count: int, status: int = 200, start: float = T0, step: float = 1.0) -> None:
    for i in range(count):
        run.ledger.record(user, tier, start + i * step, start + i * step + 0.1, status, (2, 10, 12))


def counts(rows: list[dict]) -> list[tuple]:
    return [(r["user"], r["sent"], r["limited"]) for r in rows]


def test_the_tab_json_has_the_run_tiers_prices_currency_totals_and_top_users(ui: tuple) -> None:
    client, run, _ = ui
    send(run, "premiumuser1", "premium", 3)
    data = client.get("/chargeback/table").get_json()
    assert data["run"] == {"id": run.record.meta["run_id"], "scenario": "seed-demo", "state": "running",
                           "reason": "the run has not ended"}
    assert (data["currency"], data["reset_at"]) == ("USD", None)
    assert {t["name"]: (t["users"], t["user_count"], t["price"], t["limits"]) for t in data["tiers"]} == {
        "free": (["freeuser1", "freeuser2"], 2, {"per_call": 0.001, "per_1k_tokens": 0.0005},
                 [{"name": "free-user-requests", "kind": "requests", "rates": ["2 per 2m"]}]),
        "premium": (["premiumuser1", "premiumuser2"], 2, {"per_call": 0.002, "per_1k_tokens": 0.001},
                    [{"name": "premium-user-requests", "kind": "requests", "rates": ["10 per 2m"]}]),
        "enterprise": (["enterpriseuser1"], 1, {"per_call": 0.005, "per_1k_tokens": 0.002},
                       [{"name": "enterprise-user-requests", "kind": "requests", "rates": ["50 per 2m"]}]),
    }
    assert (data["users"], data["top"], data["top_limited"], data["search"]) == (1, 10, [], None)
    assert data["totals"] == [{"tier": "premium", "user": "(all users)", "users": 1, "sent": 3, "authorized": 3,
                               "limited": 0, "rejected": 0, "errors": 0, "prompt_tokens": 6, "completion_tokens": 30,
                               "total_tokens": 36, "cost": 0.006036}]
    assert data["top_sent"] == [{"tier": "premium", "user": "premiumuser1", "sent": 3, "authorized": 3, "limited": 0,
                                 "rejected": 0, "errors": 0, "prompt_tokens": 6, "completion_tokens": 30,
                                 "total_tokens": 36, "cost": 0.006036, "limits": [
                                     {"limit_name": "premium-user-requests", "rate": "10 per 2m", "windows": 1,
                                      "allowed": 10, "over": False, "text": "3 / 10 per 2m"}]}]


def test_limit_markers_say_how_many_calls_the_windows_spanned_allow() -> None:
    run = Run(PLAN)
    send(run, "freeuser1", "free", 3)  # 3 authorized within one 2-minute window: one too many
    send(run, "premiumuser1", "premium", 12, step=15.0)  # 12 over 165 s: two windows allow 20
    send(run, "premiumuser2", "premium", 2)
    send(run, "premiumuser2", "premium", 1, status=429, start=T0 + 5)
    send(run, "premiumuser2", "premium", 1, status=NO_ANSWER, start=T0 + 6)
    table = webui.table_json(run.plan, run.summary, run.ledger)
    markers = {r["user"]: r["limits"] for r in table["top_sent"]}
    assert markers == {
        "freeuser1": [{"limit_name": "free-user-requests", "rate": "2 per 2m", "windows": 1, "allowed": 2,
                       "over": True, "text": "3 / 2 per 2m"}],
        "premiumuser1": [{"limit_name": "premium-user-requests", "rate": "10 per 2m", "windows": 2, "allowed": 20,
                          "over": False, "text": "12 / 20 (2 windows of 10 per 2m)"}],
        "premiumuser2": [{"limit_name": "premium-user-requests", "rate": "10 per 2m", "windows": 1, "allowed": 10,
                          "over": False, "text": "2 / 10 per 2m"}],
    }
    assert table["top_limited"][0]["limits"] == markers["premiumuser2"]  # the same markers in every list


def scale_ledger(run: Run) -> None:
    """Users with ties: a0..a4 send 3 each (a1 and a3 limited once, a4 twice), b0 5, b1 3, c0 1; premium, free,
    enterprise in turn."""
    tiers = ("premium", "free", "enterprise")
    for i in range(5):
        send(run, f"a{i}", tiers[i % 3], 3)
    send(run, "a1", "free", 1, status=429, start=T0 + 10)
    send(run, "a3", "premium", 1, status=429, start=T0 + 10)
    send(run, "a4", "free", 2, status=429, start=T0 + 10)
    send(run, "b0", "premium", 5)
    send(run, "b1", "free", 3)
    send(run, "c0", "enterprise", 1)


def test_the_top_users_are_the_most_sent_and_the_most_limited_ties_by_name() -> None:
    run = Run(PLAN)
    scale_ledger(run)
    users, _ = webui.user_table(run.plan, run.ledger)
    assert counts(webui.top_users(users, "sent", 4)) == [("a4", 5, 2), ("b0", 5, 0), ("a1", 4, 1), ("a3", 4, 1)]
    assert counts(webui.top_users(users, "limited", 10)) == [("a4", 5, 2), ("a1", 4, 1), ("a3", 4, 1)]  # not 0s
    assert counts(webui.top_users(users, "sent", 100)) == [("a4", 5, 2), ("b0", 5, 0), ("a1", 4, 1), ("a3", 4, 1),
                                                           ("a0", 3, 0), ("a2", 3, 0), ("b1", 3, 0), ("c0", 1, 0)]
    assert webui.top_users(users, "sent", 1) == [next(r for r in users if r["user"] == "a4")]
    table = webui.table_json(run.plan, run.summary, run.ledger, top=2)
    assert (table["users"], counts(table["top_sent"]), counts(table["top_limited"])) == (
        8, [("a4", 5, 2), ("b0", 5, 0)], [("a4", 5, 2), ("a1", 4, 1)])
    assert [(t["tier"], t["users"], t["sent"], t["limited"]) for t in table["totals"]] == [
        ("enterprise", 2, 4, 0), ("free", 3, 12, 3), ("premium", 3, 12, 1)]


def test_the_search_finds_users_by_part_of_the_name_capped_with_the_count() -> None:
    run = Run(PLAN)
    scale_ledger(run)
    for i in range(60):
        send(run, f"bulk{i:02d}", "free", 1 + i % 2)
    users, _ = webui.user_table(run.plan, run.ledger)
    assert (webui.search_users(users, "a")[0], counts(webui.search_users(users, "a")[1])) == (
        5, [("a0", 3, 0), ("a1", 4, 1), ("a2", 3, 0), ("a3", 4, 1), ("a4", 5, 2)])
    assert counts(webui.search_users(users, "B0")[1]) == [("b0", 5, 0)]  # case does not matter
    assert webui.search_users(users, "nobody") == (0, [])
    matched, rows = webui.search_users(users, "bulk")
    assert (matched, len(rows), rows[0]["user"], rows[-1]["user"]) == (60, 50, "bulk00", "bulk49")  # first by name
    search = webui.table_json(run.plan, run.summary, run.ledger, search="bulk5")["search"]
    assert (search["text"], search["matched"], search["limit"]) == ("bulk5", 10, 50)
    assert counts(search["rows"]) == [(f"bulk5{i}", 1 + i % 2, 0) for i in range(10)]
    assert search["rows"][0]["limits"] == []  # a user the Plan does not know: no limit applies
    assert webui.table_json(run.plan, run.summary, run.ledger, search="zzz")["search"] == {
        "text": "zzz", "matched": 0, "limit": 50, "rows": []}


def test_the_route_reads_top_and_user_and_the_csv_holds_every_user(ui: tuple) -> None:
    client, run, _ = ui
    send(run, "freeuser1", "free", 3)
    send(run, "premiumuser1", "premium", 2)
    send(run, "premiumuser2", "premium", 4)
    send(run, "freeuser2", "free", 1, status=429)
    data = client.get("/chargeback/table?top=2&user=%20PREMIUM%20").get_json()
    assert (data["top"], counts(data["top_sent"]), counts(data["top_limited"])) == (
        2, [("premiumuser2", 4, 0), ("freeuser1", 3, 0)], [("freeuser2", 1, 1)])
    assert (data["search"]["text"], data["search"]["matched"], counts(data["search"]["rows"])) == (
        "PREMIUM", 2, [("premiumuser1", 2, 0), ("premiumuser2", 4, 0)])
    assert client.get("/chargeback/table?user=freeuser2").get_json()["search"]["rows"][0]["limits"][0]["text"] == (
        "0 / 2 per 2m")
    assert client.get("/chargeback/table?user=nobody").get_json()["search"] == {
        "text": "nobody", "matched": 0, "limit": 50, "rows": []}
    assert [client.get(f"/chargeback/table?top={n}").get_json()["top"] for n in ("0", "1", "100", "5000", "x", "")] == [
        1, 1, 100, 100, 10, 10]
    assert client.get("/chargeback/table?user=").get_json()["search"] is None
    assert client.get("/chargeback/csv").get_data(as_text=True).splitlines() == [
        "tier,user,sent,authorized,limited,rejected,errors,prompt_tokens,completion_tokens,total_tokens,cost",
        "free,freeuser1,3,3,0,0,0,6,30,36,0.003018",
        "free,freeuser2,1,0,1,0,0,2,10,12,6e-06",  # a 429's tokens, if it had any, are charged
        "free,(all users),4,3,1,0,0,8,40,48,0.003024",
        "premium,premiumuser1,2,2,0,0,0,4,20,24,0.004024",
        "premium,premiumuser2,4,4,0,0,0,8,40,48,0.008048",
        "premium,(all users),6,6,0,0,0,12,60,72,0.012072"]
    assert client.get("/stats/requests").get_json()["extended_stats"] == [{"key": "chargeback", "data": data["totals"]}]


def test_the_tiers_table_names_the_first_users_of_a_big_tier_and_counts_them() -> None:
    summary = Run(PLAN).summary
    big = replace(summary, tiers={"free": replace(summary.tiers["free"],
                                                  users=tuple(f"u{i}" for i in range(10_000)))})
    assert [(t["name"], t["users"], t["user_count"]) for t in webui.tiers_json(big)] == [
        ("free", [f"u{i}" for i in range(10)], 10_000)]


def test_reset_clears_the_table_until_new_traffic_and_keeps_the_record(ui: tuple) -> None:
    client, run, _ = ui
    send(run, "freeuser1", "free", 2)
    send(run, "premiumuser1", "premium", 4)
    assert client.post("/stats/reset").status_code == 200
    data = client.get("/chargeback/table?user=user").get_json()
    assert (data["users"], data["totals"], data["top_sent"], data["top_limited"], data["search"]["matched"]) == (
        0, [], [], [], 0)
    assert data["run"]["id"] == run.record.meta["run_id"] and data["reset_at"] is not None
    assert client.get("/stats/requests").get_json()["extended_stats"] == [{"key": "chargeback", "data": []}]
    send(run, "premiumuser1", "premium", 1, start=T0 + 10)
    data = client.get("/chargeback/table?user=premiumuser1").get_json()
    assert [(r["user"], r["sent"], r["authorized"], r["total_tokens"], r["cost"]) for r in data["top_sent"]] == [
        ("premiumuser1", 1, 1, 12, 0.002012)]
    assert [(r["tier"], r["users"], r["sent"], r["total_tokens"], r["cost"]) for r in data["totals"]] == [
        ("premium", 1, 1, 12, 0.002012)]
    assert data["top_sent"][0]["limits"][0]["text"] == "1 / 10 per 2m"
    assert data["search"]["rows"] == data["top_sent"]
    csv_lines = client.get("/chargeback/csv").get_data(as_text=True).splitlines()
    assert csv_lines[1:] == ["premium,premiumuser1,1,1,0,0,0,2,10,12,0.002012",
                             "premium,(all users),1,1,0,0,0,2,10,12,0.002012"]
    assert run.ledger.accounts["premiumuser1"].sent == 5  # the run record's ledger lost nothing
    run.sync.begin()  # a new run's ledger: the reset was about the last one
    send(run, "freeuser1", "free", 1)
    data = client.get("/chargeback/table").get_json()
    assert ([r["sent"] for r in data["top_sent"]], [r["sent"] for r in data["totals"]]) == ([1], [1])


def test_the_page_loads_our_script_and_nothing_served_holds_an_api_key(ui: tuple) -> None:
    client, run, _ = ui
    for identity in PLAN.identities:
        send(run, identity.user, identity.tier, 1)
    page = client.get("/").get_data(as_text=True)
    assert page.count('<script src="./chargeback/static/chargeback.js"></script></body>') == 1
    assert '<link rel="stylesheet" href="./chargeback/static/chargeback.css">' in page
    script = client.get("/chargeback/static/chargeback.js")
    assert script.status_code == 200 and "cb-picker" in script.get_data(as_text=True)
    assert client.get("/chargeback/static/chargeback.css").status_code == 200
    assert client.get("/chargeback/static/../webui.py").status_code == 404
    served = "".join(client.get(path).get_data(as_text=True) for path in (
        "/", "/chargeback/table", "/chargeback/csv", "/chargeback/scenarios", "/chargeback/verify", "/stats/requests"))
    keys = [i.key for i in PLAN.identities if i.key]
    assert keys and not [k for k in keys if k in served]


def test_the_pickers_choices_say_what_each_scenario_runs(ui: tuple) -> None:
    client, _, _ = ui
    data = client.get("/chargeback/scenarios").get_json()
    assert data["selected"] == ""
    choices = {c["name"]: c for c in data["scenarios"]}
    assert list(choices) == ["", *SCENARIOS]
    assert choices[""] == {"name": "", "description": webui.NO_SCENARIO, "users": None, "ends": "", "error": ""}
    assert choices["seed-demo"] == {"name": "seed-demo", "description": SCENARIOS["seed-demo"].description,
                                    "users": 3, "ends": "when every simulated user has sent its requests", "error": ""}
    assert (choices["saturation"]["users"], choices["saturation"]["ends"]) == (
        len(SCENARIOS["saturation"].slots(PLAN)), f"after {SCENARIOS['saturation'].duration:g} s")
    keyless = load_plan([str(DEPLOY / "auth-policy.yaml")])  # no identities: only bad-keys can run
    with pytest.raises(ValueError) as why:
        SCENARIOS["seed-demo"].slots(keyless)
    choices = {c["name"]: c for c in webui.scenario_choices(keyless)}
    assert (choices["seed-demo"]["users"], choices["seed-demo"]["error"]) == (None, str(why.value))
    assert (choices["bad-keys"]["users"], choices["bad-keys"]["error"]) == (2, "")


def test_the_swarm_hook_chooses_the_forms_scenario_or_answers_why_not(ui: tuple, monkeypatch: pytest.MonkeyPatch
                                                                      ) -> None:
    client, _, environment = ui
    chosen: list[tuple[str, str]] = []

    def choose(env: Environment, name: str) -> None:
        chosen.append((name, env.parsed_options.tier_weights))
        if name == "nope":
            raise ValueError("unknown scenario 'nope': choose one of seed-demo")

    monkeypatch.setattr(webui, "choose_scenario", choose)
    answer = client.post("/swarm", data={"scenario": "nope", "user_count": "1", "spawn_rate": "1"}).get_json()
    assert answer == {"success": False, "message": "unknown scenario 'nope': choose one of seed-demo",
                      "host": environment.host}
    client.post("/swarm", data={"user_count": "0", "spawn_rate": "1", "tier_weights": "free=1"})
    assert chosen == [("nope", ""), ("", "free=1")]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="pytest" errors="1"
failures="1" skipped="1" tests="4"><testcase classname="checks.test_auth" name="test_ok" time="0.000" /><testcase
classname="checks.test_limits" name="test_policy_limit_held[freeuser1-free-user-requests]" time="0.000"><failure
message="Failed: freeuser1: the limit did not hold&#10;user       client  server&#10;freeuser1  3       3">freeuser1:
the limit did not hold</failure></testcase><testcase classname="checks.test_reconciliation"
name="test_token_counters_match_the_ledger[None]" time="0.001"><skipped type="pytest.skip" message="no token counters to
compare">/x/checks/plugin.py:5: no token counters to compare</skipped></testcase><testcase classname="checks.test_x"
name="test_err" time="0.000"><error message="failed on setup with &quot;RuntimeError: boom&quot;">traceback</error>
</testcase></testsuite></testsuites>"""


def test_check_results_are_read_from_junit_xml() -> None:
    assert parse_junit(JUNIT) == [
        CheckResult("checks.test_auth", "test_ok", "passed", ""),
        CheckResult("checks.test_limits", "test_policy_limit_held[freeuser1-free-user-requests]", "failed",
                    "freeuser1: the limit did not hold\nuser       client  server\nfreeuser1  3       3"),
        CheckResult("checks.test_reconciliation", "test_token_counters_match_the_ledger[None]", "skipped",
                    "no token counters to compare"),
        CheckResult("checks.test_x", "test_err", "error", 'failed on setup with "RuntimeError: boom"'),
    ]


def test_verify_needs_a_finished_record_and_reports_the_checks(ui: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    client, run, _ = ui
    assert client.post("/chargeback/verify").get_json()["refused"] == (
        f"run {run.record.meta['run_id']} is not finished yet")
    run.record.finish(run.ledger, True, "")
    calls: list[tuple] = []

    def checks(path: Path, *extra: str, timeout: float | None = None,
               auth: PrometheusAuth | None = None) -> tuple[int, list[CheckResult], str]:
        calls.append((path, extra, auth))
        return 1, parse_junit(JUNIT), "4 tests"

    monkeypatch.setattr(webui, "check_results", checks)
    started = client.post("/chargeback/verify").get_json()
    assert (started["state"], started["refused"], started["run_id"]) == ("running", "", run.record.meta["run_id"])
    for _ in range(100):  # the greenlet runs when the test yields
        status = client.get("/chargeback/verify").get_json()
        if status["state"] != "running":
            break
        gevent.sleep(0.01)
    assert calls == [(run.record.path, (), PrometheusAuth())]  # the run's credentials (none here)
    assert (status["state"], status["exit_code"], status["counts"]) == (
        "done", 1, {"passed": 1, "failed": 1, "skipped": 1, "error": 1})
    assert [r["outcome"] for r in status["results"]] == ["passed", "failed", "skipped", "error"]


def test_with_web_login_the_tab_and_the_scenario_choice_need_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = ui_environment(monkeypatch, web_login=True)
    environment.web_ui.app.config["SECRET_KEY"] = "test"
    environment.web_ui.login_manager.user_loader(lambda user_id: None)
    run = Run.register(environment, PLAN)
    webui.register(environment, run)
    client = environment.web_ui.app.test_client()
    try:
        for path in ("/chargeback/table", "/chargeback/scenarios", "/chargeback/verify", "/chargeback/csv"):
            assert client.get(path).status_code in (302, 401), path
        assert client.post("/swarm", data={"scenario": "seed-demo"}).status_code in (302, 401)
        assert environment.parsed_options.scenario == ""  # the hook left the choice alone
    finally:
        environment.runner.quit()


def test_with_the_class_picker_a_scenario_is_refused_not_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = ui_environment(monkeypatch)
    environment.web_ui.userclass_picker_is_active = True
    webui.register(environment, Run.register(environment, PLAN))
    try:
        answer = environment.web_ui.app.test_client().post("/swarm", data={"scenario": "seed-demo"}).get_json()
        assert answer["success"] is False and answer["message"] == (
            "a scenario decides its user classes itself: with --class-picker, choose no scenario")
    finally:
        environment.runner.quit()
