"""One Locust process's share of a run: scenario slots, the ledger, worker/master sync and the run record.

Local and master runners own the slots and the record; workers claim slots from the master, send ledger deltas
with every stats report, and a final delta when their users stop. Before any traffic the master checks every URL
(preflight) and reads the counters' state; after the traffic it writes the ledger first, then waits for one scrape
of the gateway's targets and snapshots the counters, so nothing already seen is lost if that fails.
"""
from __future__ import annotations

import itertools
import logging
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from chargeback.ledger import Ledger
from chargeback.limitador import LimitadorError
from chargeback.plan import Plan
from chargeback.preflight import PreflightError, Sources, preflight
from chargeback.prometheus import MetricsSourceError, PrometheusSource
from chargeback.record import COMPLETE, RunRecord
from chargeback.verify import fresh_snapshot
from scenarios import MISSING, UNKNOWN, Scenario, Slot, scenario_named

log = logging.getLogger("chargeback")
FINAL_REPORT_WAIT = 10.0  # seconds the master waits for the workers' last ledger deltas
CLAIM_WAIT = 30.0
GRACEFUL_STOP = 5.0  # seconds a stopping run waits for answers in flight, at least (unless --stop-timeout is given)
LONGEST_STOP = 120.0  # ... and at most, however slow the answers were
EXIT_PREFLIGHT, EXIT_INCOMPLETE = 2, 3  # Locust's exit code when a run could not start, or did not complete


class Run:
    """Per-process state of the current test; `active` between test_start and test_stop."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.environment: Environment | None = None
        self.ledger = Ledger()
        self.scenario: Scenario | None = None
        self.slots: list[Slot] = []
        self.claimed: dict[int, str] = {}  # slot index -> the worker that runs it ("" locally)
        self.done: set[int] = set()
        self.started = 0.0
        self.active = False
        self.failed = ""  # why the last run could not start
        self.record: RunRecord | None = None
        self.workers: set[str] = set()
        self.finals: set[str] = set()
        self.reports: dict[str, float] = {}  # worker -> when its last ledger delta arrived
        self.finisher: gevent.Greenlet | None = None
        self.sources = Sources(None, None, None)
        self.slowest = 0.0  # the longest a request took to be answered, seconds
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
        events.test_stopping.add_listener(self.on_test_stopping)
        events.test_stop.add_listener(self.on_test_stop)
        events.quitting.add_listener(self.on_quitting)
        events.quit.add_listener(self.on_quit)
        if isinstance(environment.runner, WorkerRunner):
            events.report_to_master.add_listener(lambda client_id, data, **_: data.update(chargeback=self.ledger.drain()))
            environment.runner.register_message("chargeback_slot", self._on_slot)
        elif isinstance(environment.runner, MasterRunner):
            events.worker_report.add_listener(self._on_report)
            environment.runner.register_message("chargeback_claim", self._on_claim)
            environment.runner.register_message("chargeback_done", lambda msg, **_: self._mark_done(msg.data))
            environment.runner.register_message("chargeback_final", self._on_final)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def on_test_start(self, environment: Environment, **_: Any) -> None:
        options = environment.parsed_options
        self.scenario = scenario_named(options.scenario)
        self.slots = self.scenario.slots(self.plan)
        self.ledger, self.claimed, self.done, self.finals, self.reports = Ledger(), {}, set(), set(), {}
        self.started, self.slowest, self.failed = time.time(), 0.0, ""
        if self.is_worker:
            self.active = True
            return
        self.workers = set(self.runner.clients) if isinstance(self.runner, MasterRunner) else set()
        try:  # before any traffic: the spawn waits for this
            self.sources = preflight(self.plan, environment.host or "", options.prometheus_url, options.metrics_url,
                                     options.job, options.limitador_url, options.namespace)
            before = fresh_snapshot(self.sources.metrics, time.time()) if self.sources.metrics else None
            limitador = self._limitador_state()
        except (PreflightError, MetricsSourceError, LimitadorError) as exc:
            self._refuse(str(exc))
            return
        metrics = self.sources.metrics
        self.record = RunRecord.start(Path(options.runs_dir), {
            "scenario": self.scenario.name, "scenario_description": self.scenario.description,
            "gateway_url": environment.host, "prometheus_url": options.prometheus_url,
            "metrics_url": options.metrics_url, "limitador_url": options.limitador_url, "job": options.job,
            "namespace": self.sources.namespace, "limitador": limitador,
            "targets": [t.to_dict() for t in metrics.targets()] if isinstance(metrics, PrometheusSource) else None,
            "workers": len(self.workers), "simulated_users": len(self.slots), "plan": self.plan.describe(),
        }, {"before": before} if before is not None else None)
        self.active = True
        log.info("run record: %s", self.record.path)

    def _limitador_state(self) -> dict[str, Any] | None:
        admin = self.sources.limitador
        return None if admin is None else {"status_before": admin.status(), "before": admin.counters()}

    def _refuse(self, reason: str) -> None:
        """No traffic: one line (headless: the last one Locust prints; it exits with EXIT_PREFLIGHT), and the run
        ends at once."""
        self.failed, self.active, self.record = f"{reason}; no request was sent", False, None
        if not self.environment.parsed_options.headless:
            print(f"error: {self.failed}", file=sys.stderr, flush=True)
        gevent.spawn(self._end)

    def on_quit(self, exit_code: int, **_: Any) -> None:
        """After Locust's statistics: why the run could not start, or did not complete."""
        if self.failed:
            print(f"error: {self.failed}", file=sys.stderr, flush=True)
        elif self.record is not None and self.record.state != COMPLETE:
            print(f"error: run {self.record.path} is {self.record.state}: {self.record.meta['reason']}; "
                  f"`pytest checks/ --run {self.record.path} --partial` reconciles what it holds",
                  file=sys.stderr, flush=True)

    def on_test_stopping(self, environment: Environment, **_: Any) -> None:
        """Let answers in flight arrive: wait for them as long as twice the slowest answer so far (at least
        GRACEFUL_STOP, at most LONGEST_STOP), unless --stop-timeout says otherwise."""
        if not environment.parsed_options.stop_timeout:
            environment.stop_timeout = min(LONGEST_STOP, max(GRACEFUL_STOP, 2 * self.slowest + 1))

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if not self.active:
            return
        self.active = False
        if self.is_worker:
            self.runner.send_message("chargeback_final", self.ledger.drain())
            return
        self.finisher = gevent.spawn(self._finish, self.record, self._progress())

    def on_quitting(self, environment: Environment, **_: Any) -> None:
        """Ctrl-C or SIGTERM: stop the run first, so that it is finished (and marked) like any other; wait for its
        record; exit non-zero for a run that could not start or did not complete."""
        if self.is_worker:
            return
        if self.active:
            self.runner.stop()
        if self.finisher is not None:
            self.finisher.join(timeout=self._finish_bound())
        if self.failed:
            environment.process_exit_code = EXIT_PREFLIGHT
        elif self.record is not None and self.record.state != COMPLETE:
            environment.process_exit_code = EXIT_INCOMPLETE

    def _finish_bound(self) -> float:
        """How long finishing may take: the workers' last deltas, then one scrape of the gateway's targets."""
        metrics = self.sources.metrics
        scrape = metrics.barrier_timeout() if isinstance(metrics, PrometheusSource) else 10.0
        return FINAL_REPORT_WAIT + scrape + 10.0

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
        """Wait (bounded) for every worker's last delta; write the ledger; then snapshot the counters one scrape
        after the last answer; write the record, complete or not with the reason."""
        deadline = time.monotonic() + FINAL_REPORT_WAIT
        while self.workers - self.finals - set(self.lost_workers()) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if record is None:
            return
        missing = sorted(self.workers - self.finals)
        reasons = [unfinished] if unfinished else []
        if missing:
            reasons.append(f"no final report from worker(s) {', '.join(missing)}")
            record.meta["unaccounted"] = self._unaccounted(missing)
        record.checkpoint(self.ledger, "taking the counters' snapshot after the run")
        reasons += self._after_snapshot(record)
        record.finish(self.ledger, complete=not reasons, reason="; ".join(reasons))
        log.info("run record %s: %s %s", record.path, record.state, record.meta["reason"])

    def _unaccounted(self, workers: list[str]) -> dict[str, Any]:
        """The users of workers that sent no final report: the ledger may lack their last requests."""
        users = sorted({self.slots[i].account for i, worker in self.claimed.items() if worker in workers})
        last = [self.reports[w] for w in workers if w in self.reports]
        since = time.strftime("%H:%M:%S", time.localtime(max(last))) if last else "the start"
        return {"users": users, "why": f"worker(s) {', '.join(workers)} lost: their requests since their last "
                                       f"report ({since}) are not in the ledger"}

    def _after_snapshot(self, record: RunRecord) -> list[str]:
        """Snapshot the counters one scrape after the last answer (and Limitador's status); what failed."""
        metrics, admin = self.sources.metrics, self.sources.limitador
        problems = []
        before = record.snapshots.get("before")
        if metrics is not None and before is not None:
            try:
                after = fresh_snapshot(metrics, self.ledger.last_answer() or self.started)
                after.resets = metrics.resets(before.at, after.at)
                record.snapshots["after"] = after
            except MetricsSourceError as exc:
                log.error("no snapshot of the counters after the run: %s", exc)
                problems.append(f"no snapshot of the counters after the run: {exc}")
        if admin is not None and record.meta.get("limitador"):
            try:
                record.meta["limitador"]["status_after"] = admin.status()
            except LimitadorError as exc:
                problems.append(f"no status of Limitador after the run: {exc}")
        return problems

    def finished(self) -> bool:
        """Every budget spent, or the scenario's duration reached."""
        if self.scenario is None:
            return False
        if self.scenario.duration is not None:
            return time.time() - self.started >= self.scenario.duration
        return len(self.done) == len(self.slots)

    def answered(self, sent: float, done: float) -> None:
        """Note how long an answer took (the stop waits for answers in flight accordingly)."""
        if done - sent > self.slowest:
            self.slowest = done - sent

    # --- slots -------------------------------------------------------------------------------------------------
    def claim(self, user_class: str) -> Slot | None:
        """The next free slot of this user class (asked of the master from a worker); None once the run is over."""
        if not self.is_worker:
            return self._assign(user_class, "")
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

    def _assign(self, user_class: str, worker: str) -> Slot | None:
        if not self.active:
            return None
        for slot in self.slots:
            if slot.user_class == user_class and slot.index not in self.claimed:
                self.claimed[slot.index] = worker
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
    def _on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        self.ledger.merge(data.get("chargeback", []))
        self.reports[client_id] = time.time()

    def _on_claim(self, environment: Environment, msg: Any, **_: Any) -> None:
        slot = self._assign(msg.data["user_class"], msg.node_id)
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
