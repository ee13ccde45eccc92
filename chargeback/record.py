"""RunRecord: one folder per run (`runs/<run-id>/`), each file written atomically, readable while a run goes on."""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .counters import Snapshot
from .ledger import Ledger
from .summary import PlanSummary

RECORD_FILE = "record.json"
LEDGER_FILE = "ledger.json"
SNAPSHOTS_FILE = "snapshots.json"
RUNNING, COMPLETE, INCOMPLETE = "running", "complete", "incomplete"


class RecordError(ValueError):
    """A run record that is missing or unreadable; one line naming the file."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def new_run_id(scenario: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    return f"{stamp}-{scenario}-{secrets.token_hex(2)}"


@dataclass
class RunRecord:
    """What a run was and what the client saw: `meta` and `plan` are record.json, `ledger` ledger.json."""

    path: Path
    meta: dict[str, Any]
    plan: PlanSummary
    ledger: Ledger
    snapshots: dict[str, Snapshot] = field(default_factory=dict)  # "before" / "after" the traffic

    @property
    def state(self) -> str:
        return self.meta["state"]

    @classmethod
    def start(cls, runs_dir: Path, meta: dict[str, Any], plan: PlanSummary,
              snapshots: dict[str, Snapshot] | None = None) -> RunRecord:
        """Create `runs_dir/<run-id>/` marked running (so a killed run stays marked), and point `latest` at it."""
        run_id = new_run_id(meta["scenario"])
        path = Path(runs_dir) / run_id
        path.mkdir(parents=True)
        record = cls(path, {**meta, "run_id": run_id, "state": RUNNING, "reason": "the run has not ended",
                            "started": time.time(), "ended": None}, plan, Ledger(), dict(snapshots or {}))
        record.save()
        link = Path(runs_dir) / "latest"
        tmp = link.with_name(f".latest.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_id)
        os.replace(tmp, link)
        return record

    def checkpoint(self, ledger: Ledger, reason: str) -> None:
        """Write the ledger as it stands (the record stays running, with `reason`): nothing is lost if what
        follows fails."""
        self.ledger = ledger
        self.meta["reason"] = reason
        self.save()

    def finish(self, ledger: Ledger, complete: bool, reason: str = "") -> None:
        """Write the ledger, then record.json (the commit point) as complete or incomplete with the reason."""
        self.ledger = ledger
        self.meta.update(state=COMPLETE if complete else INCOMPLETE, reason=reason, ended=time.time())
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path / LEDGER_FILE, self.ledger.to_list())
        if self.snapshots:
            write_json_atomic(self.path / SNAPSHOTS_FILE, {k: s.to_dict() for k, s in self.snapshots.items()})
        write_json_atomic(self.path / RECORD_FILE, {**self.meta, "plan": self.plan.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> RunRecord:
        path = Path(path)
        meta = _read_json(path / RECORD_FILE)
        try:
            plan = PlanSummary.from_dict(meta.pop("plan"))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RecordError(f"{path / RECORD_FILE}: plan: missing or malformed ({exc!r})") from None
        ledger = Ledger.from_list(_read_json(path / LEDGER_FILE))
        snapshots = _read_json(path / SNAPSHOTS_FILE) if (path / SNAPSHOTS_FILE).exists() else {}
        return cls(path, meta, plan, ledger, {k: Snapshot.from_dict(v) for k, v in snapshots.items()})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file (not a run record folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON: {exc}") from None
