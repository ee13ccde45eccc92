"""RunRecord: one folder per run (`runs/<run-id>/`), each file written atomically, readable while a run goes on."""
from __future__ import annotations

import json
import os
import secrets
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .counters import Snapshot
from .ledger import ANY_SENDER, COLUMNS, COUNTS, Account, Ledger
from .summary import PlanSummary

RECORD_FILE = "record.json"
LEDGER_FILE = "ledger.npz"  # numpy's format: the accounts' totals, and every request in four columns
OLD_LEDGER_FILE = "ledger.json"  # what versions before 0.11 wrote
SNAPSHOTS_FILE = "snapshots.json"
RUNNING, COMPLETE, INCOMPLETE = "running", "complete", "incomplete"


class RecordError(ValueError):
    """A run record that is missing or unreadable; one line naming the file."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_ledger_atomic(path: Path, ledger: Ledger) -> None:
    """The ledger in numpy's .npz format (22 bytes per request: sent, answered, status, sender; the accounts' rows
    in user order), each request column streamed account by account (no copy of it in memory), written beside
    `path` and renamed over it."""
    accounts = sorted(ledger.accounts.values(), key=lambda a: a.user)
    times = [[np.nan if t is None else t for t in (a.first, a.last)] for a in accounts]
    tables = {"user": np.array([a.user for a in accounts], dtype=str),
              "tier": np.array([a.tier for a in accounts], dtype=str),
              "totals": np.array([[getattr(a, n) for n in COUNTS] for a in accounts], dtype=np.int64),
              "first_last": np.array(times, dtype=np.float64).reshape(-1, 2),
              "requests": np.array([len(a.columns[0]) for a in accounts], dtype=np.int64)}
    requests = int(tables["requests"].sum())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w", allowZip64=True) as archive:
        for name, table in tables.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as file:
                np.lib.format.write_array(file, table, allow_pickle=False)
        for i, (name, typecode) in enumerate(COLUMNS):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as file:
                header = {"descr": np.dtype(typecode).str, "fortran_order": False, "shape": (requests,)}
                np.lib.format.write_array_header_2_0(file, header)
                for account in accounts:
                    file.write(account.columns[i])
    os.replace(tmp, path)


def read_ledger(path: Path) -> Ledger:
    """The ledger `write_ledger_atomic` wrote, one column at a time; RecordError naming the file if it is missing
    or unreadable."""
    ledger = Ledger()
    try:
        with np.load(path, allow_pickle=False) as data:
            requests, totals, first_last = data["requests"], data["totals"].tolist(), data["first_last"].tolist()
            for user, tier, counts, times in zip(data["user"].tolist(), data["tier"].tolist(), totals, first_last):
                first, last = (None if t != t else t for t in times)  # NaN: none
                ledger.accounts[user] = Account(user, tier, **dict(zip(COUNTS, counts)), first=first, last=last)
            ends = np.cumsum(requests).tolist()
            for i, (name, _) in enumerate(COLUMNS):
                column = data[name]
                if len(column) != (ends[-1] if ends else 0):
                    raise ValueError(f"{name} holds {len(column)} requests, the accounts {ends[-1] if ends else 0}")
                for account, end, count in zip(ledger.accounts.values(), ends, requests.tolist()):
                    account.columns[i].frombytes(column[end - count:end].tobytes())
                del column
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file (not a run record folder?)") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, zipfile.BadZipFile) as exc:
        raise RecordError(f"{path}: not a readable ledger: {exc}") from None
    return ledger


def _old_ledger(path: Path) -> Ledger:
    """A ledger.json of a version before 0.11: accounts with a `timeline` of (sent, answered, status[, sender])."""
    ledger = Ledger()
    try:
        for item in _read_json(path):
            account = Account(**{k: item[k] for k in ("user", "tier", *COUNTS, "first", "last")})
            for sent, done, status, *sender in item["timeline"]:
                account.add(sent, done, status, sender[0] if sender else ANY_SENDER)
            ledger.accounts[account.user] = account
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"{path}: not a readable ledger: {exc!r}") from None
    return ledger


def new_run_id(scenario: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now or time.time()))
    return f"{stamp}-{scenario}-{secrets.token_hex(2)}"


@dataclass
class RunRecord:
    """What a run was and what the client saw: `meta` and `plan` are record.json, `ledger` ledger.npz."""

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
        write_ledger_atomic(self.path / LEDGER_FILE, self.ledger)
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
        old = path / OLD_LEDGER_FILE
        ledger = _old_ledger(old) if old.exists() and not (path / LEDGER_FILE).exists() else read_ledger(
            path / LEDGER_FILE)
        snapshots = _read_json(path / SNAPSHOTS_FILE) if (path / SNAPSHOTS_FILE).exists() else {}
        return cls(path, meta, plan, ledger, {k: Snapshot.from_dict(v) for k, v in snapshots.items()})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file (not a run record folder?)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON: {exc}") from None
