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
    assert sorted(p.name for p in second.path.iterdir()) == ["ledger.json", "record.json"]


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
    (record.path / "ledger.json").write_text("[{")
    with pytest.raises(RecordError, match=rf"^{record.path}/ledger.json: not valid JSON: "):
        RunRecord.load(record.path)
    assert json.loads((record.path / "record.json").read_text())["state"] == RUNNING
