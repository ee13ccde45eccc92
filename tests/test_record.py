"""Run records: atomic files, `latest`, state and reason, clear errors for missing or broken records."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_plan import DEPLOY

from chargeback.ledger import Ledger
from chargeback.plan import load_plan
from chargeback.record import COMPLETE, INCOMPLETE, RUNNING, RecordError, RunRecord
from chargeback.summary import PlanSummary

PLAN = PlanSummary.of(load_plan([DEPLOY]))


def test_start_marks_running_and_points_latest(tmp_path: Path) -> None:
    first = RunRecord.start(tmp_path, {"scenario": "seed-demo"}, PLAN)
    second = RunRecord.start(tmp_path, {"scenario": "bad-keys"}, PLAN)
    assert os.readlink(tmp_path / "latest") == second.path.name
    loaded = RunRecord.load(tmp_path / "latest")
    assert (loaded.state, loaded.meta["scenario"], loaded.meta["ended"]) == (RUNNING, "bad-keys", None)
    assert RunRecord.load(first.path).state == RUNNING
    assert sorted(p.name for p in second.path.iterdir()) == ["ledger.npz", "record.json"]


def test_finish_writes_the_ledger_and_the_state(tmp_path: Path) -> None:
    record = RunRecord.start(tmp_path, {"scenario": "seed-demo"}, PLAN)
    ledger = Ledger()
    ledger.record("freeuser1", "free", 1.0, 1.1, 429)
    record.finish(ledger, complete=False, reason="stopped before the scenario finished: 1 of 3 simulated users done")
    loaded = RunRecord.load(record.path)
    assert (loaded.state, loaded.meta["reason"]) == (INCOMPLETE, "stopped before the scenario finished: 1 of 3 simulated users done")
    assert loaded.ledger.accounts["freeuser1"].limited == 1 and loaded.meta["ended"] >= loaded.meta["started"]
    record.finish(ledger, complete=True)
    assert RunRecord.load(record.path).state == COMPLETE
    assert [p.name for p in record.path.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_missing_and_broken_records_fail_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=rf"^{tmp_path}/nope/record.json: no such file \(not a run record folder\?\)$"):
        RunRecord.load(tmp_path / "nope")
    record = RunRecord.start(tmp_path, {"scenario": "seed-demo"}, PLAN)
    (record.path / "ledger.npz").write_text("[{")
    with pytest.raises(RecordError, match=rf"^{record.path}/ledger.npz: not a readable ledger: "):
        RunRecord.load(record.path)
    (record.path / "ledger.npz").unlink()
    with pytest.raises(RecordError, match=rf"^{record.path}/ledger.npz: no such file"):
        RunRecord.load(record.path)
    assert json.loads((record.path / "record.json").read_text())["state"] == RUNNING


def test_the_ledger_file_holds_every_request_in_columns_of_26_bytes(tmp_path: Path) -> None:
    record = RunRecord.start(tmp_path, {"scenario": "soak"}, PLAN)
    ledger = Ledger()
    for i in range(100_000):
        ledger.record(f"user{i % 1000}", "free", 1000.0 + i / 7, 1000.25 + i / 7, (200, 429, 0)[i % 3],
                      (1, 2, 3) if i % 3 == 0 else None, i % 50)
    ledger.record("idle", "free", 5.0, 5.5, 401)
    record.finish(ledger, complete=True)
    size = (record.path / "ledger.npz").stat().st_size
    assert 26 * 100_001 < size < 28 * 100_001  # the columns, and a row of totals per account
    loaded = RunRecord.load(record.path).ledger
    assert {u: (vars(a) | {"columns": a.entries()}) for u, a in loaded.accounts.items()} == {
        u: (vars(a) | {"columns": a.entries()}) for u, a in ledger.accounts.items()}


def test_a_ledger_written_before_0_11_is_read(tmp_path: Path) -> None:
    record = RunRecord.start(tmp_path, {"scenario": "seed-demo"}, PLAN)
    (record.path / "ledger.npz").unlink()
    (record.path / "ledger.json").write_text(json.dumps([{
        "user": "freeuser1", "tier": "free", "sent": 2, "authorized": 1, "limited": 1, "rejected": 0, "errors": 0,
        "prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10, "first": 1.0, "last": 2.0,
        "timeline": [[1.0, 1.1, 200, 3], [2.0, 2.1, 429]]}]))
    account = RunRecord.load(record.path).ledger.accounts["freeuser1"]
    assert (account.authorized, account.limited, account.total_tokens) == (1, 1, 10)
    assert account.entries() == [(1.0, 1.1, 200, 3), (2.0, 2.1, 429, -1)]
