"""The run record, from the master's (or local runner's) side. Before any traffic: every URL must answer
(preflight) and the counters' state is read (Limitador's /counters, else their history in Prometheus, kept in the
record so that a later check does not depend on Prometheus still holding it). After the traffic: the ledger is
written first, then the counters are snapshotted one scrape of the gateway's targets after the last answer, so
nothing already seen is lost if that fails; the record ends complete, or incomplete with the reasons."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from chargeback.counters import Snapshot
from chargeback.ledger import Ledger
from chargeback.limitador import LimitadorError
from chargeback.plan import Plan
from chargeback.preflight import PreflightError, Sources, preflight
from chargeback.prometheus import MetricsSourceError, PrometheusAuth, PrometheusSource
from chargeback.record import RunRecord
from chargeback.summary import PlanSummary
from chargeback.verify import fresh_snapshot, history_priors, schema_of
from scenarios import Scenario

from .options import prometheus_auth
from .sync import FINAL_REPORT_WAIT

log = logging.getLogger("chargeback")


CONTROLS = "locust"  # the record's scenario when Locust's controls drove the tier users


def controls_description(options: Any, shape: str | None) -> str:
    """What Locust's controls asked for: users, spawn rate and run time, or the user's LoadTestShape."""
    if shape:
        load = f"the LoadTestShape {shape}"
    else:
        run_time = f"{options.run_time} s" if options.run_time else "until stopped"
        load = f"{options.num_users} users at {options.spawn_rate:g}/s, {run_time}"
    return f"Locust's controls: {load}; tier weights {options.tier_weights or 'equal'}; pattern {options.pattern}"


class Refused(Exception):
    """The run cannot start: a URL does not answer, or the counters cannot be read; one line."""


class Recorder:
    def __init__(self, plan: Plan, summary: PlanSummary):
        self.plan = plan
        self.summary = summary
        self.sources = Sources(None, None, None)
        self.auth = PrometheusAuth()  # the run's credentials for Prometheus: its checks read with them too

    def start(self, options: Any, host: str, scenario: Scenario | None, shape: str | None, simulated_users: int,
              workers: int) -> RunRecord:
        """Preflight, the counters' state before the run, and a record marked running; Refused if any fails."""
        try:
            self.auth = prometheus_auth(options)
        except ValueError as exc:  # a token file that cannot be read: one line naming it
            raise Refused(str(exc)) from None
        try:  # before any traffic: the spawn waits for this
            self.sources = preflight(self.plan, host, options.prometheus_url, options.metrics_url, options.job,
                                     options.limitador_url, options.namespace, self.auth)
            metrics, admin = self.sources.metrics, self.sources.limitador
            before = fresh_snapshot(metrics, time.time()) if metrics else None
            limitador = None if admin is None else {"status_before": admin.status(), "before": admin.counters()}
        except (PreflightError, MetricsSourceError, LimitadorError) as exc:
            raise Refused(str(exc)) from None
        record = RunRecord.start(Path(options.runs_dir), {
            "scenario": scenario.name if scenario else CONTROLS,
            "scenario_description": scenario.description if scenario else controls_description(options, shape),
            "gateway_url": host, "prometheus_url": options.prometheus_url,
            "prometheus_auth": self.auth.to_record() if options.prometheus_url else None,  # never the token
            "metrics_url": options.metrics_url, "limitador_url": options.limitador_url, "job": options.job,
            "namespace": self.sources.namespace, "limitador": limitador,
            "targets": [t.to_dict() for t in metrics.targets()] if isinstance(metrics, PrometheusSource) else None,
            "workers": workers, "simulated_users": simulated_users,
            "strict_limits": bool(getattr(options, "strict_limits", False)),
        }, self.summary, {"before": before} if before is not None else None)
        if limitador is None and isinstance(metrics, PrometheusSource) and before is not None:
            self._keep_history_prior(record, metrics, before)
        log.info("run record: %s", record.path)
        return record

    def _keep_history_prior(self, record: RunRecord, source: PrometheusSource, before: Snapshot) -> None:
        """Each valid identity's state at the run's start from its counters' history, into the record."""
        schema = schema_of(before, before, None, 0)
        users = [i.user for i in self.summary.identities if i.valid]
        try:
            priors = history_priors(self.summary, users, source, schema, self.sources.namespace,
                                    record.meta["started"])
        except MetricsSourceError as exc:  # the checks read it later, if Prometheus can tell then
            log.warning("the counters' history before the run could not be read: %s", exc)
            return
        record.meta["prior"] = {user: prior.to_dict() for user, prior in priors.items()}
        record.save()

    def finish_bound(self) -> float:
        """How long finishing may take: the workers' last deltas, then one scrape of the gateway's targets."""
        metrics = self.sources.metrics
        scrape = metrics.barrier_timeout() if isinstance(metrics, PrometheusSource) else 10.0
        return FINAL_REPORT_WAIT + scrape + 10.0

    def finish(self, record: RunRecord, ledger: Ledger, reasons: list[str], last_answer: float) -> None:
        """Write the ledger; snapshot the counters one scrape after `last_answer`; write the record, complete
        unless there are reasons (the run's, or the snapshot's)."""
        record.checkpoint(ledger, "taking the counters' snapshot after the run")
        reasons = reasons + self._after_snapshot(record, last_answer)
        record.finish(ledger, complete=not reasons, reason="; ".join(reasons))
        log.info("run record %s: %s %s", record.path, record.state, record.meta["reason"])

    def _after_snapshot(self, record: RunRecord, last_answer: float) -> list[str]:
        """Snapshot the counters one scrape after the last answer (and Limitador's status); what failed."""
        metrics, admin = self.sources.metrics, self.sources.limitador
        problems = []
        before = record.snapshots.get("before")
        if metrics is not None and before is not None:
            try:
                after = fresh_snapshot(metrics, last_answer)
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
