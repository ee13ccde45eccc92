"""The web UI in headless Chromium against the stand-in: the scenario picker locks what a scenario decides; a run
with Locust's controls fills the Chargeback tab live (per-tier totals, the top users by calls and by limited, a
search by user), and Verify shows what `pytest --run` says of its record; with --check a failing gateway's run is
verified on its own, its failure table in the tab; Reset clears the tab."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from browser import Page, open_page
from test_locust_e2e import locust_args
from test_plan import ROOT

from chargeback.record import COMPLETE, RunRecord
from scenarios import SCENARIOS
from sim.prometheus import free_port
from sim.stack import LocalStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PICKER_READY = "document.querySelector('#cb-scenario')?.options.length"
NO_SCENARIO = ("No scenario: Locust's own controls (users, ramp up, run time, tier weights, pattern) drive the "
               "tier users")
LOCKED = "['userCount', 'spawnRate', 'runTime'].map((n) => document.querySelector(`form input[name=${n}]`).disabled)"
TEXT = "document.querySelector('{}')?.textContent"
RESULTS = "document.querySelector('#cb-results') && [...document.querySelectorAll('#cb-results tr')].map((r) => " \
          "[r.dataset.name, r.dataset.outcome])"
ROWS = "[...document.querySelectorAll('{} tbody tr')].map((r) => [r.dataset.user ?? r.dataset.tier, " \
       "[...r.cells].map((c) => c.textContent)])"
TOTALS, TOP_SENT, TOP_LIMITED, MATCHES = (ROWS.format(t) for t in ("#cb-totals", "#cb-top-sent", "#cb-top-limited",
                                                                   "#cb-matches"))


@contextmanager
def locust_ui(stack: LocalStack, runs: Path, *extra: str) -> Iterator[str]:
    """Locust with its web UI on a free port of 127.0.0.1, against the stand-in; its URL once it answers."""
    port = free_port()
    policies = [Path(p) for p in stack.policies]
    locust = subprocess.Popen(locust_args(stack.gateway_url, runs, policies, "--web-host", "127.0.0.1", "--web-port",
                                          str(port), *extra),
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(150):  # bounded: until the UI answers
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        locust.terminate()
        _, err = locust.communicate(timeout=60)
        assert "Traceback" not in err, err[-3000:]


def pytest_outcomes(run: Path, tmp_path: Path, *extra: str) -> dict[str, tuple[str, str]]:
    """`pytest --run RUN` as a user runs it: test name -> (outcome, failure message) from its JUnit report."""
    report = tmp_path / "independent.xml"
    subprocess.run([sys.executable, "-m", "pytest", "--run", str(run), "-p", "no:cacheprovider",
                    f"--junitxml={report}", *extra], cwd=tmp_path, capture_output=True, timeout=300)
    outcomes = {}
    for case in ElementTree.parse(report).iter("testcase"):
        found = [child for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[found[0].tag] if found else "passed"
        message = found[0].get("message", "").removeprefix("Failed: ") if found and outcome != "skipped" else ""
        outcomes[case.get("name")] = (outcome, message)
    return outcomes


def shown_outcomes(page: Page) -> dict[str, tuple[str, str]]:
    """What the tab shows of the checks: test name -> (outcome, the failure table shown for it, if any)."""
    shown = page.evaluate("Object.fromEntries([...document.querySelectorAll('#cb-results tr')].map((r) => "
                          "[r.dataset.name, [r.dataset.outcome, document.querySelector("
                          "`pre.cb-failure[data-name=\"${CSS.escape(r.dataset.name)}\"]`)?.textContent ?? '']]))")
    return {name: (outcome, text) for name, (outcome, text) in shown.items()}


def start(page: Page, scenario: str, **fields: str) -> None:
    """Fill the start form (the picker first) and press Start; Locust's dashboard follows."""
    page.wait_for(PICKER_READY)
    page.fill("#cb-scenario", scenario)
    for name, value in fields.items():
        page.fill(f"form input[name={name}]", value)
    page.click("form button[type=submit]")
    page.wait_for("!document.querySelector('#cb-picker')")  # the form is gone: the test started
    page.click("button[role=tab]", "Chargeback")
    page.wait_for("!!document.querySelector('#cb-panel #cb-totals')")


def test_picking_a_scenario_shows_its_description_and_locks_what_it_decides(stack: LocalStack, tmp_path: Path) -> None:
    with locust_ui(stack, tmp_path / "runs") as ui, open_page(ui) as page:
        page.wait_for(PICKER_READY)
        assert page.evaluate("[...document.querySelector('#cb-scenario').options].map((o) => o.value)") == [
            "", *SCENARIOS]
        assert page.evaluate("document.querySelector('form').firstElementChild.firstElementChild.id") == "cb-picker"
        assert (page.evaluate(TEXT.format("#cb-description")), page.evaluate(LOCKED)) == (
            NO_SCENARIO, [False, False, False])
        page.fill("#cb-scenario", "seed-demo")
        assert page.evaluate(TEXT.format("#cb-description")) == SCENARIOS["seed-demo"].description
        assert page.evaluate(TEXT.format("#cb-lock")) == (
            "Scenario seed-demo decides the simulated users (3) and when the run ends (when every simulated user has "
            "sent its requests): number of users, ramp up and run time do not apply.")
        assert page.evaluate(LOCKED) == [True, True, True]
        page.fill("#cb-scenario", "")
        assert (page.evaluate(LOCKED), page.evaluate(TEXT.format("#cb-lock"))) == ([False, False, False], "")
        assert page.evaluate("document.querySelector('form input[name=scenario]')") is None  # the picker is the field
        page.fill("form input[name=prometheusUrl]", stack.prometheus_url)  # remembered in this browser
        page.open(ui)
        page.wait_for(PICKER_READY)
        assert page.evaluate("document.querySelector('form input[name=prometheusUrl]').value") == stack.prometheus_url


def test_a_run_with_locusts_controls_fills_the_tab_and_verify_shows_what_pytest_says(stack: LocalStack,
                                                                                   tmp_path: Path) -> None:
    stack.restart_gateway()
    runs = tmp_path / "runs"
    with locust_ui(stack, runs, "--prometheus-url", stack.prometheus_url) as ui, open_page(ui) as page:
        start(page, "", userCount="4", spawnRate="4", runTime="6s")
        live = page.wait_for(f"{TOP_SENT}.length && {TEXT.format('#cb-run-state')} === 'running' && {TOP_SENT}",
                             timeout=10)  # rows while the run goes on
        assert len(live) >= 1 and page.evaluate(f"{TOTALS}.length") >= 1
        page.wait_for("!document.querySelector('#cb-verify').disabled", timeout=60)  # the record is finished
        record = json.loads((runs / "latest" / "record.json").read_text())
        assert (record["state"], record["scenario"]) == (COMPLETE, "locust")  # Locust's controls
        assert page.evaluate(TEXT.format("#cb-run-id")) == record["run_id"]
        assert page.evaluate(TEXT.format("#cb-currency")) == "USD"
        tiers = page.evaluate("[...document.querySelectorAll('#cb-tiers tbody tr')].map((r) => "
                              "[...r.cells].map((c) => c.textContent))")
        assert ["free", "freeuser1, freeuser2", "free-user-requests: 2 per 2m (requests)",
                "0.001 / call, 0.0005 / 1k tokens"] in tiers
        done = RunRecord.load(runs / "latest")
        accounts = done.ledger.accounts
        assert accounts and page.evaluate(TEXT.format("#cb-user-count")) == str(len(accounts))

        def cells(user: str) -> list[str]:  # the first columns of a user's row, as the record has them
            account = accounts[user]
            limit = done.plan.rates_of(user)[0][0].limit
            return [account.tier, user, str(account.sent), f"{account.authorized} / {limit} per 2m",
                    str(account.limited)]

        # the tab's last table is the record's: each tier's totals, the top users by calls and by limited
        by_tier: dict[str, list] = {}
        for account in accounts.values():
            by_tier.setdefault(account.tier, []).append(account)
        assert [[tier, row[:5]] for tier, row in page.evaluate(TOTALS)] == [
            [tier, [tier, str(len(group)), str(sum(a.sent for a in group)), str(sum(a.authorized for a in group)),
                    str(sum(a.limited for a in group))]] for tier, group in sorted(by_tier.items())]
        by_sent = sorted(accounts.values(), key=lambda a: (-a.sent, a.user))[:10]
        assert [[user, row[:5]] for user, row in page.evaluate(TOP_SENT)] == [[a.user, cells(a.user)] for a in by_sent]
        by_limited = sorted((a for a in accounts.values() if a.limited), key=lambda a: (-a.limited, a.user))[:10]
        assert by_limited  # the free tier (2 per 2m) is limited in 6 s of 1 request a second
        assert [[user, row[:5]] for user, row in page.evaluate(TOP_LIMITED)] == [
            [a.user, cells(a.user)] for a in by_limited]

        # the search: a user's name shows its row, exact; part of a name every user has shows them all; no match
        user = by_limited[0].user
        page.fill("#cb-search", user)
        page.wait_for(f"!!document.querySelector('#cb-matches tr[data-user=\"{user}\"]')", timeout=10)
        matched = [u for u in accounts if user in u]
        assert [[u, row[:5]] for u, row in page.evaluate(MATCHES)] == [[u, cells(u)] for u in sorted(matched)]
        assert page.evaluate(TEXT.format("#cb-search-count")) == (
            f"{len(matched)} user{'' if len(matched) == 1 else 's'} match “{user}”.")
        page.fill("#cb-search", "USER")
        page.wait_for(f"{MATCHES}.length === {len(accounts)}", timeout=10)
        assert [u for u, _ in page.evaluate(MATCHES)] == sorted(accounts)
        page.fill("#cb-search", "nobody")
        page.wait_for("document.querySelector('#cb-search-count')?.dataset.matched === '0'", timeout=10)
        assert (page.evaluate(TEXT.format("#cb-search-count")), page.evaluate(f"{MATCHES}.length")) == (
            "No user with requests matches “nobody”.", 0)
        assert page.evaluate(RESULTS) is None  # nothing verified before the button is pressed
        page.click("#cb-verify")
        page.wait_for(RESULTS, timeout=120)
        shown = shown_outcomes(page)
        expected = pytest_outcomes(runs / "latest", tmp_path)
        assert shown == expected and len(shown) > 10
        assert {outcome for outcome, _ in shown.values()} <= {"passed", "failed", "skipped"}

        page.click("button", "Reset")
        page.wait_for(f"{TOTALS}.length === 0 && !!document.querySelector('#cb-top-sent-empty')",
                      timeout=10)  # cleared until new traffic
        assert page.evaluate(f"{TOP_SENT}.length + {TOP_LIMITED}.length") == 0
        assert page.evaluate(TEXT.format("#cb-run-id")) == record["run_id"]
        assert RunRecord.load(runs / "latest").ledger.accounts.keys() == done.ledger.accounts.keys()


def test_with_check_a_failing_gateways_run_is_verified_on_its_own_with_the_failure_table(stack: LocalStack,
                                                                                         tmp_path: Path) -> None:
    stack.restart_gateway(["over-limit:freeuser1"])  # one request of freeuser1 over its limit gets through
    runs = tmp_path / "runs"
    with locust_ui(stack, runs, "--prometheus-url", stack.prometheus_url, "--check") as ui, open_page(ui) as page:
        start(page, "seed-demo")
        page.wait_for(RESULTS, timeout=120)  # no button pressed: --check verifies the finished record
        record = RunRecord.load(runs / "latest")
        assert (record.state, record.meta["scenario"]) == (COMPLETE, "seed-demo")
        assert page.evaluate("document.querySelector('#cb-results').dataset.run") == record.meta["run_id"]
        shown = shown_outcomes(page)
        assert shown == pytest_outcomes(record.path, tmp_path)
        failed = {name for name, (outcome, _) in shown.items() if outcome == "failed"}
        assert "test_policy_limit_held[freeuser1-free-user-requests]" in failed
        table = shown["test_policy_limit_held[freeuser1-free-user-requests]"][1]
        assert table.startswith("freeuser1: the limit free-user-requests (2 per 120 s) did not hold: the client got 3 "
                                "answer(s) past the limiter")
        marker = page.evaluate("document.querySelector('#cb-top-sent tr[data-user=freeuser1] .cb-limit').textContent")
        assert marker == "3 / 2 per 2m ⚠ over the limit"
