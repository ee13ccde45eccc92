"""Chargeback reports: from a run record and from Prometheus over a range (restarts handled), in CSV, JSON and an
HTML page that a real headless Chromium renders."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from browser import chromium, rendered_dom
from PIL import Image
from test_checks_e2e import locust_run
from test_plan import DEPLOY, ROOT
from test_verify import A, L, record, series, snapshot

from chargeback.ledger import Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.report import from_prometheus, from_run
from chargeback.report_files import CSV_COLUMNS, write_all
from chargeback.summary import PlanSummary
from sim.stack import LocalStack

SEED_COLUMNS = ["timestamp", "user", "group", "calls", "cost"]


def seeded_record(tmp_path: Path, server_authorized: float = 2.0):
    """freeuser1: 2 authorized and 3 limited on the client; the server's snapshots say `server_authorized` / 3."""
    rec = record(tmp_path, *[("freeuser1", "free", 200)] * 2, *[("freeuser1", "free", 429)] * 3)
    rec.snapshots = {"before": snapshot(), "after": snapshot(series(A, "freeuser1", server_authorized, group="free"),
                                                             series(L, "freeuser1", 3.0, group="free"))}
    rec.save()
    return rec


def test_report_from_a_run_in_csv_json_html(tmp_path: Path) -> None:
    rec = seeded_record(tmp_path)
    report = from_run(str(rec.path), {}, {})
    csv_path, json_path, html_path, _ = write_all(report, tmp_path / "out")
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0])[:5] == SEED_COLUMNS and list(rows[0]) == CSV_COLUMNS
    assert {k: rows[0][k] for k in ("user", "group", "calls", "cost", "sent", "limited", "source")} == {
        "user": "freeuser1", "group": "free", "calls": "2", "cost": "0.002000", "sent": "5", "limited": "3",
        "source": "server"}
    data = json.loads(json_path.read_text())
    assert data["tiers"] == [{"group": "free", "users": 1, "authorized": 2, "limited": 3, "total_tokens": 0,
                              "cost": 0.002}]
    assert data["flags"] == [] and "checked against the client's ledger" in data["source"]
    page = html_path.read_text()
    assert page.count("<svg") == 3 and "<script" not in page and "<link" not in page and 'src="' not in page


def test_prices_can_be_overridden(tmp_path: Path) -> None:
    report = from_run(str(seeded_record(tmp_path).path), {"free": 0.5}, {})
    assert report.users[0].cost == pytest.approx(1.0)


def test_a_disagreement_is_flagged_and_the_source_said(tmp_path: Path) -> None:
    report = from_run(str(seeded_record(tmp_path, server_authorized=3.0).path), {}, {})
    assert report.flags == ["freeuser1: DISAGREES with the ledger: client saw 2 authorized / 3 limited"]
    assert report.users[0].authorized == 3 and report.users[0].source == "server"
    bare = record(tmp_path / "bare", ("freeuser1", "free", 200))
    ledger_only = from_run(str(bare.path), {}, {})
    assert ledger_only.users[0].source == "ledger" and "ledger only" in ledger_only.source


def test_a_report_of_many_users_lists_the_top_ones_and_its_size_does_not_grow_with_the_run(tmp_path: Path) -> None:
    """100 users, once with about 400 requests each, once with ten times as many: the page names the 50 users with
    the most calls, the CSV holds every user, and the page stays under 300 kB (its curves have a fixed number of
    points: ten times the requests make it at most 30 % larger)."""
    plan = PlanSummary.of(load_plan([DEPLOY]))
    sizes = []
    for per_user in (400, 4000):
        rec = RunRecord.start(tmp_path / str(per_user), {"scenario": "soak"}, plan)
        ledger = Ledger()
        for i in range(100):
            for n in range(per_user + i % 7):
                ledger.record(f"user{i:03d}", "free", rec.meta["started"] + n, rec.meta["started"] + n + 0.1,
                              429 if n % 5 == 4 else 200)
        rec.finish(ledger, complete=True)
        csv_path, _, html_path, _ = write_all(from_run(str(rec.path), {}, {}), tmp_path / f"out{per_user}")
        rows = list(csv.DictReader(csv_path.open()))
        assert len(rows) == 100 and sum(int(r["sent"]) for r in rows) == ledger.requests()
        page = html_path.read_text()
        assert "The 50 users with the most calls of 100; every user is in the CSV and JSON" in page
        assert page.count("<tr><td>user") == 50 and "<td>user006</td>" in page  # 6 more requests than user000
        sizes.append(html_path.stat().st_size)
    assert max(sizes) < 300_000 and sizes[1] < 1.3 * sizes[0], sizes


@pytest.mark.e2e
def test_report_command_errors_are_one_line(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "chargeback", "report", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)

    assert cli(str(tmp_path / "nope")).stderr == f"error: {tmp_path}/nope/record.json: no such file (not a run record folder?)\n"
    assert cli().stderr == ("error: report needs a run folder, or --prometheus-url with --since (e.g. --since 24h)\n")
    assert cli(str(tmp_path), "--price", "free").stderr == "error: --price 'free': expected TIER=AMOUNT, e.g. free=0.001\n"


@pytest.mark.e2e
def test_range_report_from_prometheus_counts_through_a_restart(stack: LocalStack, tmp_path: Path) -> None:
    locust_run(stack, tmp_path / "first")
    locust_run(stack, tmp_path / "second")  # a fresh gateway: every counter restarted from zero
    report = from_prometheus(stack.prometheus_url, 3600, load_plan([DEPLOY]), {}, {})
    assert {u.user: (u.group, u.authorized, u.limited) for u in report.users} == {
        "premiumuser1": ("premium", 16, 0), "freeuser1": ("free", 4, 6), "premiumuser2": ("premium", 12, 0)}
    assert report.tiers()[1]["cost"] == pytest.approx(28 * 0.002)
    result = subprocess.run([sys.executable, "-m", "chargeback", "report", "--prometheus-url", stack.prometheus_url,
                             "--since", "1h", "--out", str(tmp_path / "range")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = {r["user"]: r for r in csv.DictReader((tmp_path / "range" / "chargeback.csv").open())}
    assert (rows["freeuser1"]["calls"], rows["freeuser1"]["limited"]) == ("4", "6")


@pytest.mark.e2e
def test_the_html_report_renders_in_headless_chromium_with_titled_plots(tmp_path: Path) -> None:
    html = write_all(from_run(str(seeded_record(tmp_path).path), {}, {}), tmp_path / "out")[2]
    shot = tmp_path / "report.png"
    rendered = chromium("--window-size=1200,2200", f"--screenshot={shot}", html.as_uri())
    dom = rendered_dom(html.as_uri())
    assert rendered.returncode == 0 and shot.exists(), rendered.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2200) and len(image.resize((120, 220)).getcolors(maxcolors=100000)) > 20  # not blank
    for text in ("Requests over time per tier (authorized vs limited)", "Authorized vs limited per tier",
                 "Requests over time per user, the 1 with the most calls (authorized vs limited)",
                 "Cost per tier", "Cost per user, the 1 costliest",  # titles
                 "seconds from the start", "requests so far", "cost (USD)", ">tier<", ">user<",  # axes
                 "freeuser1 authorized", "freeuser1 limited", "free authorized", "free limited", ">authorized<", ">limited<", ">cost<"):  # legends
        assert text in dom, text
