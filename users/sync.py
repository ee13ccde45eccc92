"""The run's ledger across processes: each worker sends what it accounted since its last report with every stats
report, and a final delta when its users stop; the master merges them and knows whose final report is missing."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from chargeback.ledger import Ledger

FINAL_REPORT_WAIT = 10.0  # seconds the master waits for the workers' last ledger deltas


class LedgerSync:
    """This process's ledger; on the master, also which workers sent their final delta and when each last reported."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.ledger = Ledger()
        self.workers: set[str] = set()  # the workers of the current run (master only)
        self.finals: set[str] = set()
        self.reports: dict[str, float] = {}  # worker -> when its last ledger delta arrived

    def register(self, environment: Environment) -> None:
        self.environment = environment
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            environment.events.report_to_master.add_listener(
                lambda client_id, data, **_: data.update(chargeback=self.ledger.drain()))
            runner.register_message("chargeback_stop", lambda msg, **_: gevent.spawn(runner.stop))
        elif isinstance(runner, MasterRunner):
            environment.events.worker_report.add_listener(self._on_report)
            runner.register_message("chargeback_final", self._on_final)

    def begin(self) -> None:
        runner = self.environment.runner if self.environment else None
        self.ledger, self.finals, self.reports = Ledger(), set(), {}
        self.workers = set(runner.clients) if isinstance(runner, MasterRunner) else set()

    def send_final(self) -> None:
        """On a worker: what is left of its ledger, to the master."""
        self.environment.runner.send_message("chargeback_final", self.ledger.drain())

    def collect_finals(self, lost: Callable[[], list[str]], stopping: float) -> list[str]:
        """On the master, when the run stops: ask every worker to stop its users (a quitting master sends no stop
        of its own, and hears nothing more once it has quit), and wait until every worker that is not lost sent
        its final delta (at most `stopping`, the longest a worker may take to stop its users, and
        FINAL_REPORT_WAIT more); the workers that did not."""
        self.environment.runner.send_message("chargeback_stop")
        deadline = time.monotonic() + stopping + FINAL_REPORT_WAIT
        while self.workers - self.finals - set(lost()) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        return sorted(self.workers - self.finals)

    def last_report(self, workers: list[str]) -> str:
        """When the last of these workers' deltas arrived (local time), or "the start"."""
        last = [self.reports[w] for w in workers if w in self.reports]
        return time.strftime("%H:%M:%S", time.localtime(max(last))) if last else "the start"

    def _on_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        self.ledger.merge(data.get("chargeback", []))
        self.reports[client_id] = time.time()

    def _on_final(self, environment: Environment, msg: Any, **_: Any) -> None:
        self.ledger.merge(msg.data)
        self.finals.add(msg.node_id)
