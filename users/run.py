"""One Locust process's share of a run, registered on its Environment: the scenario's slots (`SlotBook`), the ledger
(`LedgerSync`), the run record (`Recorder`), and when the run starts, stops and ends.

    run = Run.register(environment, plan)   # from Locust's init event; then run_of(environment) anywhere
"""
from __future__ import annotations

import secrets
import sys
import time
from typing import TYPE_CHECKING, Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from chargeback.ledger import Ledger
from chargeback.plan import Plan
from chargeback.record import COMPLETE, RunRecord
from chargeback.summary import PlanSummary
from scenarios import MISSING, UNKNOWN, Scenario, Slot

from .accounting import Accounting
from .options import endless_stream, scenario_of

if TYPE_CHECKING:
    from .shape import TierClasses
from .recorder import Recorder, Refused
from .slots import SlotBook
from .sync import LedgerSync

GRACEFUL_STOP = 5.0  # seconds a stopping run waits for answers in flight, at least (unless --stop-timeout is given)
LONGEST_STOP = 120.0  # ... and at most, however slow the answers were
EXIT_PREFLIGHT, EXIT_INCOMPLETE = 2, 3  # Locust's exit code when a run could not start, or did not complete


class Run:
    """Per-process state of the current test; `active` between test_start and test_stop."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.summary = PlanSummary.of(plan)
        self.environment: Environment | None = None
        self.sync = LedgerSync()
        self.slots = SlotBook(self.summary.digest, self._on_slot_done, self._on_other_plan)
        self.recorder = Recorder(plan, self.summary)
        self.classes: TierClasses | None = None  # the user classes per tier (set when the locustfile's init runs)
        self.scenario: Scenario | None = None  # None: Locust's controls drive the tier users
        self.accounting = Accounting(self.sync, self.answered)
        self.started = 0.0
        self.active = False
        self.failed = ""  # why the last run could not start
        self.problems: list[str] = []  # what makes the current run incomplete, besides its progress
        self.record: RunRecord | None = None
        self.finisher: gevent.Greenlet | None = None
        self.slowest = 0.0  # the longest a request took to be answered, seconds

    @classmethod
    def register(cls, environment: Environment, plan: Plan) -> Run:
        """A Run for this environment, its listeners and messages registered (from Locust's init event)."""
        run = cls(plan)
        run.environment = environment
        environment.chargeback_run = run  # type: ignore[attr-defined]
        events = environment.events
        events.test_start.add_listener(run.on_test_start)
        events.test_stopping.add_listener(run.on_test_stopping)
        events.test_stop.add_listener(run.on_test_stop)
        events.quitting.add_listener(run.on_quitting)
        events.quit.add_listener(run.on_quit)
        events.request.add_listener(run.accounting.on_request)
        run.sync.register(environment)
        run.slots.register(environment)
        if isinstance(environment.runner, MasterRunner):
            run._finish_before_quitting(environment.runner)
        return run

    def _finish_before_quitting(self, runner: MasterRunner) -> None:
        """Locust's quit (a run time's end, a shape's, ours) stops the run without telling the workers, tells them
        to quit and stops hearing them half a second later: stop the run first and wait for its record, the
        workers' final deltas in it."""
        quit_now = runner.quit

        def quit_when_finished() -> None:
            if self.active:
                runner.stop(send_stop_to_client=False)
            if self.finisher is not None:
                self.finisher.join(timeout=self.longest_stop() + self.recorder.finish_bound())
            quit_now()

        runner.quit = quit_when_finished  # type: ignore[method-assign]

    @property
    def ledger(self) -> Ledger:
        """This process's ledger."""
        return self.sync.ledger

    @property
    def runner(self) -> Any:
        assert self.environment is not None and self.environment.runner is not None
        return self.environment.runner

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    # --- lifecycle ---------------------------------------------------------------------------------------------
    def on_test_start(self, environment: Environment, **_: Any) -> None:
        options = environment.parsed_options
        self.scenario = scenario_of(options)
        if self.scenario is None:
            self.slots.begin([], self.rotation(), endless_stream(options))
        else:
            self.slots.begin(self.scenario.slots(self.plan))
        self.sync.begin()
        self.started, self.slowest, self.failed, self.problems = time.time(), 0.0, "", []
        if self.is_worker:
            self.active = True
            return
        try:
            own_shape = environment.shape_class if self.scenario is None else None  # a user's LoadTestShape
            shape = type(own_shape).__name__ if own_shape else None
            self.record = self.recorder.start(options, environment.host or "", self.scenario, shape,
                                              len(self.slots.slots) if self.scenario else options.num_users,
                                              len(self.sync.workers))
        except Refused as exc:
            self._refuse(str(exc))
            return
        self.active = self.slots.open = True

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
                  f"`pytest --run {self.record.path} --partial` reconciles what it holds",
                  file=sys.stderr, flush=True)

    def on_test_stopping(self, environment: Environment, **_: Any) -> None:
        """Let answers in flight arrive: wait for them as long as twice the slowest answer so far (at least
        GRACEFUL_STOP, at most LONGEST_STOP), unless --stop-timeout says otherwise."""
        if not environment.parsed_options.stop_timeout:
            environment.stop_timeout = min(LONGEST_STOP, max(GRACEFUL_STOP, 2 * self.slowest + 1))

    def longest_stop(self) -> float:
        """The longest a process may take to stop its users (each worker sets its own stop timeout from its own
        slowest answers, which the master does not know)."""
        return self.environment.parsed_options.stop_timeout or LONGEST_STOP

    def on_test_stop(self, environment: Environment, **_: Any) -> None:
        if not self.active:
            return
        self.active = self.slots.open = False
        if self.is_worker:
            self.sync.send_final()
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
            self.finisher.join(timeout=self.longest_stop() + self.recorder.finish_bound())
        if self.failed:
            environment.process_exit_code = EXIT_PREFLIGHT
        elif self.record is not None and self.record.state != COMPLETE:
            environment.process_exit_code = EXIT_INCOMPLETE

    def lost_workers(self) -> list[str]:
        """Workers of this run the master no longer hears from (their users' budgets can never be spent)."""
        if not isinstance(self.runner, MasterRunner):
            return []
        alive = {c.id for c in self.runner.clients.all if c not in self.runner.clients.missing}
        return sorted(w for w in self.sync.workers if w not in alive and w not in self.sync.finals)

    def _progress(self) -> str:
        """Why the scenario is not finished yet; "" when it is."""
        lost = self.lost_workers()
        if lost:
            return f"worker(s) lost during the run: {', '.join(lost)}"
        if self.scenario is None or self.finished():  # with Locust's controls, the stop is the end
            return ""
        if self.scenario.duration is not None:
            return f"stopped after {time.time() - self.started:.1f} s of the scenario's {self.scenario.duration:g} s"
        return (f"stopped before the scenario finished: {len(self.slots.done)} of {len(self.slots.slots)} simulated "
                "users done")

    def _finish(self, record: RunRecord | None, unfinished: str) -> None:
        """The workers' last deltas, then the record (ledger first, then the counters after the run)."""
        missing = self.sync.collect_finals(self.lost_workers, self.longest_stop()) if self.sync.workers else []
        if record is None:
            return
        if self.scenario is None:  # Locust's controls: how many simulated users took an identity
            record.meta["simulated_users"] = len(self.slots.slots)
        reasons = [r for r in (unfinished, *self.problems) if r]
        if missing:
            reasons.append(f"no final report from worker(s) {', '.join(missing)}")
            record.meta["unaccounted"] = {
                "users": self.slots.accounts_of(missing),
                "why": f"worker(s) {', '.join(missing)} lost: their requests since their last report "
                       f"({self.sync.last_report(missing)}) are not in the ledger"}
        self.recorder.finish(record, self.ledger, reasons, self.ledger.last_answer() or self.started)

    def finished(self) -> bool:
        """Every budget spent, or the scenario's duration reached."""
        if self.scenario is None:
            return False
        if self.scenario.duration is not None:
            return time.time() - self.started >= self.scenario.duration
        return self.slots.all_done

    def answered(self, sent: float, done: float) -> None:
        """Note how long an answer took (the stop waits for answers in flight accordingly)."""
        if done - sent > self.slowest:
            self.slowest = done - sent

    def _on_slot_done(self) -> None:
        """End the test at once when the last budget is spent (not at the next shape tick)."""
        if self.active and self.finished():
            gevent.spawn(self._end)

    def _on_other_plan(self, worker: str, digest: str) -> None:
        """A worker loaded another Plan: its users get no slot, and the run ends incomplete, saying so."""
        problem = (f"worker {worker} loaded another Plan (digest {digest}, the master's {self.summary.digest}): "
                   "start master and workers with the same --policy")
        if problem not in self.problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            self.problems.append(problem)
            if self.active:
                gevent.spawn(self._end)

    def _end(self) -> None:
        options = self.runner.environment.parsed_options
        if options is not None and options.headless:
            self.runner.quit()
        else:
            self.runner.stop()

    def rotation(self) -> dict[str, list[str]]:
        """Locust's controls: each tier's identities the gateway lets through, in the Plan's order."""
        rotation: dict[str, list[str]] = {}
        for identity in self.plan.identities:
            if identity.known and identity.allowed:
                rotation.setdefault(identity.tier, []).append(identity.user)
        return rotation

    def credentials(self, slot: Slot) -> dict[str, str]:
        """The auth header a slot sends: none, an unknown key, or its identity's key."""
        auth = self.plan.auth
        if auth is None or slot.account == MISSING:
            return {}
        key = f"unknown-{secrets.token_hex(8)}" if slot.account == UNKNOWN else self.plan.identity(slot.account).key
        return {auth.header: auth.header_value(key)}


def run_of(environment: Environment) -> Run:
    """The Run registered on this environment."""
    return environment.chargeback_run  # type: ignore[attr-defined]
