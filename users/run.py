"""One Locust process's share of a run: scenario slots, the ledger, worker/master sync and the run record.

Local and master runners own the slots and the record; workers claim slots from the master, send ledger deltas
with every stats report, and a final delta when their users stop.
"""
from __future__ import annotations

import itertools
import logging
import secrets
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from chargeback.counters import Snapshot
from chargeback.ledger import Ledger
from chargeback.plan import Plan
from chargeback.prometheus import MetricsSourceError
from chargeback.record import RunRecord
from chargeback.verify import MetricsSource, fresh_snapshot, open_source
from scenarios import MISSING, UNKNOWN, Scenario, Slot, scenario_named

log = logging.getLogger("chargeback")
FINAL_REPORT_WAIT = 10.0  # seconds the master waits for the workers' last ledger deltas
CLAIM_WAIT = 30.0


class Run:
    """Per-process state of the current test; `active` between test_start and test_stop."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.environment: Environment | None = None
        self.ledger = Ledger()
        self.scenario: Scenario | None = None
        self.slots: list[Slot] = []
        self.claimed: set[int] = set()
        self.done: set[int] = set()
        self.started = 0.0
        self.active = False
        self.record: RunRecord | None = None
        self.workers: set[str] = set()
        self.finals: set[str] = set()
        self.finisher: gevent.Greenlet | None = None
        self.source: MetricsSource | None = None
        self._requests = itertools.count()
        self._pending: dict[int, AsyncResult] = {}

    # --- roles -------------------------------------------------------------------------------------------------
    @property
    def runner(self) -> Any:
        assert self.environment is not None and self.environment.runner is not None
        return self.environment.runner

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    def attach(self, environment: Environment) -> None:
        """Register the listeners and messages (from Locust's init event)."""
        self.environment = environment
        events = environment.events
        events.test_start.add_listener(self.on_test_start)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)
        if isinstance(environment.runner, WorkerRunner):
            events.report_to_master.add_listener(lambda client_id, data, **_: data.update(chargeback=self.ledger.drain()))
            environment.runner.register_message("chargeback_slot", self._on_slot)
        elif isinstance(environment.runner, MasterRunner):
            events.worker_report.add_listener(lambda client_id, data, **_: self.ledger.merge(data.get("chargeback", [])))
            environment.runner.register_message("chargeback_claim", self._on_claim)
            environment.runner.register_message("chargeback_done", lambda msg, **_: self._mark_done(msg.data))
            environment.runner.register_message("chargeback_final", self._on_final)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def on_test_start(self, environment: Environment, **_: Any) -> None:
        options = environment.parsed_options
        self.scenario = scenario_named(options.scenario)
        self.slots = self.scenario.slots(self.plan)
        self.ledger, self.claimed, self.done, self.finals = Ledger(), set(), set(), set()
        self.started, self.active = time.time(), True
        if self.is_worker:
            return
        self.workers = set(self.runner.clients) if isinstance(self.runner, MasterRunner) else set()
        self.source = open_source(options.prometheus_url, options.metrics_url)
        before = self._snapshot(time.time())  # before any traffic: the spawn waits for it
        self.record = RunRecord.start(Path(options.runs_dir), {
            "scenario": self.scenario.name, "scenario_description": self.scenario.description,
            "expected": {u: list(v) for u, v in self.scenario.expected.items()},
            "gateway_url": environment.host, "prometheus_url": options.prometheus_url,
            "metrics_url": options.metrics_url, "workers": len(self.workers), "simulated_users": len(self.slots),
            "plan": self.plan.describe(),
        }, {"before": before} if before is not None else None)
        log.info("run record: %s", self.record.path)

    def _snapshot(self, after: float) -> Snapshot | None:
        """The server's counters from a scrape later than `after`; None (logged) when the source fails."""
        if self.source is None:
            return None
        try:
            return fresh_snapshot(self.source, after)
        except MetricsSourceError as exc:
            log.error("no snapshot of the server's counters: %s", exc)
            return None

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if not self.active:
            return
        self.active = False
        if self.is_worker:
            self.runner.send_message("chargeback_final", self.ledger.drain())
            return
        self.finisher = gevent.spawn(self._finish, self.record, self._progress())

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        if self.finisher is not None:
            self.finisher.join(timeout=FINAL_REPORT_WAIT + 5)

    def lost_workers(self) -> list[str]:
        """Workers of this run the master no longer hears from (their users' budgets can never be spent)."""
        if not isinstance(self.runner, MasterRunner):
            return []
        alive = {c.id for c in self.runner.clients.all if c not in self.runner.clients.missing}
        return sorted(w for w in self.workers if w not in alive and w not in self.finals)

    def _progress(self) -> str:
        """Why the scenario is not finished yet; "" when it is."""
        assert self.scenario is not None
        lost = self.lost_workers()
        if lost:
            return f"worker(s) lost during the run: {', '.join(lost)}"
        if self.finished():
            return ""
        if self.scenario.duration is not None:
            return f"stopped after {time.time() - self.started:.1f} s of the scenario's {self.scenario.duration:g} s"
        return f"stopped before the scenario finished: {len(self.done)} of {len(self.slots)} simulated users done"

    def _finish(self, record: RunRecord | None, unfinished: str) -> None:
        """Wait (bounded) for every worker's last delta, then write the record, complete or not with the reason."""
        deadline = time.monotonic() + FINAL_REPORT_WAIT
        while self.workers - self.finals - set(self.lost_workers()) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        missing = sorted(self.workers - self.finals)
        reasons = [unfinished] if unfinished else []
        if missing:
            reasons.append(f"no final report from worker(s) {', '.join(missing)}")
        before = record.snapshots.get("before") if record else None
        after = self._snapshot(self.ledger.last_answer() or self.started) if before else None
        if record is not None and before is not None and after is not None:
            assert self.source is not None
            record.snapshots["after"] = after
            try:
                after.resets = self.source.resets(before.at, after.at)
            except MetricsSourceError as exc:
                log.error("no reset check: %s", exc)
        if record is not None:
            record.finish(self.ledger, complete=not reasons, reason="; ".join(reasons))
            log.info("run record %s: %s %s", record.path, record.state, record.meta["reason"])

    def finished(self) -> bool:
        """Every budget spent, or the scenario's duration reached."""
        if self.scenario is None:
            return False
        if self.scenario.duration is not None:
            return time.time() - self.started >= self.scenario.duration
        return len(self.done) == len(self.slots)

    # --- slots -------------------------------------------------------------------------------------------------
    def claim(self, user_class: str) -> Slot | None:
        """The next free slot of this user class (asked of the master from a worker)."""
        if not self.is_worker:
            return self._assign(user_class)
        request = next(self._requests)
        result = self._pending[request] = AsyncResult()
        self.runner.send_message("chargeback_claim", {"user_class": user_class, "request": request})
        try:
            index = result.get(timeout=CLAIM_WAIT)
        except gevent.Timeout:
            log.error("the master did not assign a %s slot within %g s", user_class, CLAIM_WAIT)
            return None
        finally:
            self._pending.pop(request, None)
        return None if index is None else self.slots[index]

    def _assign(self, user_class: str) -> Slot | None:
        for slot in self.slots:
            if slot.user_class == user_class and slot.index not in self.claimed:
                self.claimed.add(slot.index)
                return slot
        return None

    def slot_done(self, slot: Slot) -> None:
        if self.is_worker:
            self.runner.send_message("chargeback_done", slot.index)
        else:
            self._mark_done(slot.index)

    def _mark_done(self, index: int) -> None:
        """Record a spent budget; end the test at once when it was the last one (not at the next shape tick)."""
        self.done.add(index)
        if self.active and self.finished():
            gevent.spawn(self._end)

    def _end(self) -> None:
        options = self.runner.environment.parsed_options
        if options is not None and options.headless:
            self.runner.quit()
        else:
            self.runner.stop()

    def credentials(self, slot: Slot) -> dict[str, str]:
        """The auth header a slot sends: none, an unknown key, or its identity's key."""
        auth = self.plan.auth
        if auth is None or slot.account == MISSING:
            return {}
        key = f"unknown-{secrets.token_hex(8)}" if slot.account == UNKNOWN else self.plan.identity(slot.account).key
        return {auth.header: auth.header_value(key)}

    # --- messages ----------------------------------------------------------------------------------------------
    def _on_claim(self, environment: Environment, msg: Any, **_: Any) -> None:
        slot = self._assign(msg.data["user_class"])
        self.runner.send_message("chargeback_slot", {"request": msg.data["request"],
                                                     "index": None if slot is None else slot.index},
                                 client_id=msg.node_id)

    def _on_slot(self, environment: Environment, msg: Any, **_: Any) -> None:
        pending = self._pending.get(msg.data["request"])
        if pending is not None:
            pending.set(msg.data["index"])

    def _on_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.ledger.merge(msg.data)
        self.finals.add(msg.node_id)
