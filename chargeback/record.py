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
from .ledger import ANY_SENDER, COLUMNS, COUNTS, MODEL_COUNTS, NO_HEADER, NO_REPORT, Account, Ledger, RateHeaders
from .summary import PlanSummary

RECORD_FILE = "record.json"
LEDGER_FILE = "ledger.npz"  # numpy's format: the accounts' totals, and every request in five columns
OLD_LEDGER_FILE = "ledger.json"  # what versions before 0.11 wrote
SNAPSHOTS_FILE = "snapshots.json"
HEADER_COLUMNS = (("rl_remaining", "q"), ("rl_reset", "i"), ("rl_limit", "i"))  # only in runs whose answers had them
RUNNING, COMPLETE, INCOMPLETE = "running", "complete", "incomplete"


class RecordError(ValueError):
    """A run record that is missing or unreadable; one line naming the file."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_ledger_atomic(path: Path, ledger: Ledger) -> None:
    """The ledger in numpy's .npz format (26 bytes per request: sent, answered, status, sender, tokens; the
    accounts' rows in user order), each request column streamed account by account (no copy of it in memory),
    written beside `path` and renamed over it."""
    accounts = sorted(ledger.accounts.values(), key=lambda a: a.user)
    times = [[np.nan if t is None else t for t in (a.first, a.last)] for a in accounts]
    tables = {"user": np.array([a.user for a in accounts], dtype=str),
              "tier": np.array([a.tier for a in accounts], dtype=str),
              "totals": np.array([[getattr(a, n) for n in COUNTS] for a in accounts], dtype=np.int64),
              "first_last": np.array(times, dtype=np.float64).reshape(-1, 2),
              "requests": np.array([len(a.columns[0]) for a in accounts], dtype=np.int64)}
    models = [(i, model, counts) for i, a in enumerate(accounts) for model, counts in a.models.items()]
    tables |= {"model_account": np.array([i for i, _, _ in models], dtype=np.int64),  # each account's per-model
               "model_name": np.array([m for _, m, _ in models], dtype=str),         # MODEL_COUNTS
               "model_counts": np.array([c for _, _, c in models], dtype=np.int64).reshape(-1, len(MODEL_COUNTS))}
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
        _write_rate_headers(archive, accounts, requests)
    os.replace(tmp, path)


def _write_rate_headers(archive: zipfile.ZipFile, accounts: list[Account], requests: int) -> None:
    """The rate-limit header columns, only when some answer carried them (NO_HEADER where one did not), their
    X-RateLimit-Limit texts in one table (`rl_limit_texts`) that `rl_limit` indexes."""
    carried = [a.rate_headers for a in accounts if a.rate_headers is not None]
    if not carried:
        return
    texts = sorted({text for headers in carried for text in headers.limits})
    index = {text: i for i, text in enumerate(texts)}
    with archive.open("rl_limit_texts.npy", "w", force_zip64=True) as file:
        np.lib.format.write_array(file, np.array(texts, dtype=str), allow_pickle=False)
    for name, typecode in HEADER_COLUMNS:
        with archive.open(f"{name}.npy", "w", force_zip64=True) as file:
            np.lib.format.write_array_header_2_0(file, {"descr": np.dtype(typecode).str, "fortran_order": False,
                                                        "shape": (requests,)})
            for account in accounts:
                headers, rows = account.rate_headers, len(account.columns[0])
                if headers is None:
                    file.write(np.full(rows, NO_HEADER, dtype=typecode).tobytes())
                    continue
                headers.pad(rows)
                if name == "rl_limit":  # the account's own numbering -> the table's (NO_HEADER, last, stays)
                    renumber = np.array([index[t] for t in headers.limits] + [NO_HEADER], dtype=typecode)
                    file.write(renumber[np.frombuffer(headers.limit, dtype=np.int16)].tobytes())
                else:
                    file.write(headers.remaining if name == "rl_remaining" else headers.reset)


def _read_rate_headers(data: Any, ledger: Ledger, requests: np.ndarray) -> None:
    """The rate-limit header columns `_write_rate_headers` wrote, if any, into the accounts that carried some."""
    if "rl_limit" not in data.files:
        return
    texts = data["rl_limit_texts"].tolist()
    columns = {name: data[name] for name, _ in HEADER_COLUMNS}
    if any(len(c) != int(requests.sum()) for c in columns.values()):
        raise ValueError(f"the rate-limit header columns do not hold the accounts' {int(requests.sum())} requests")
    end = 0
    for account, count in zip(ledger.accounts.values(), requests.tolist()):
        start, end = end, end + count
        limit = columns["rl_limit"][start:end]
        used = np.unique(limit[limit != NO_HEADER])
        if not len(used):
            continue
        renumber = np.full(len(texts) + 1, NO_HEADER, dtype=np.int16)  # the table's numbering -> the account's
        renumber[used] = np.arange(len(used))
        headers = account.rate_headers = RateHeaders(limits=[texts[i] for i in used.tolist()])
        headers.remaining.frombytes(columns["rl_remaining"][start:end].astype(np.int64).tobytes())
        headers.reset.frombytes(columns["rl_reset"][start:end].astype(np.int32).tobytes())
        headers.limit.frombytes(renumber[limit].tobytes())


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
            if "model_counts" in data.files:  # older records have no per-model table
                accounts = list(ledger.accounts.values())
                for i, model, counts in zip(data["model_account"].tolist(), data["model_name"].tolist(),
                                            data["model_counts"].tolist()):
                    accounts[i].models[model] = counts
            ends = np.cumsum(requests).tolist()
            for i, (name, _) in enumerate(COLUMNS):
                if name not in data.files and name == "tokens":  # a record of 0.11: no tokens per request
                    for account, count in zip(ledger.accounts.values(), requests.tolist()):
                        account.columns[i].extend([NO_REPORT] * count)
                    continue
                column = data[name]
                if len(column) != (ends[-1] if ends else 0):
                    raise ValueError(f"{name} holds {len(column)} requests, the accounts {ends[-1] if ends else 0}")
                for account, end, count in zip(ledger.accounts.values(), ends, requests.tolist()):
                    account.columns[i].frombytes(column[end - count:end].tobytes())
                del column
            _read_rate_headers(data, ledger, requests)
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
