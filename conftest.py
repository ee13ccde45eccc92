"""pytest options for the post-run checks (`pytest checks/ --run runs/<id> ...`)."""
from __future__ import annotations

import pytest

from chargeback.ledger import LIMITER_TIMEOUT
from chargeback.schema import SCHEMAS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chargeback", "post-run verification (checks/)")
    group.addoption("--run", metavar="DIR", help="the run record to verify: runs/<run-id> or runs/latest")
    group.addoption("--prometheus-url", metavar="URL", help="Prometheus holding the gateway's counters")
    group.addoption("--metrics-url", metavar="URL", help="a Limitador-style /metrics URL, when there is no Prometheus")
    group.addoption("--schema", choices=sorted(SCHEMAS), help="metric names (default: detected)")
    group.addoption("--job", metavar="NAME",
                    help="Prometheus scrape job of the gateway's Limitador (default: the run's, else found by its series)")
    group.addoption("--namespace", metavar="NS/ROUTE",
                    help="limitador_namespace of the gateway's route (default: the run's, else found by the series)")
    group.addoption("--partial", action="store_true", default=False,
                    help="reconcile an incomplete run for what its record holds (the header says so)")
    group.addoption("--limiter-timeout", type=float, default=LIMITER_TIMEOUT, metavar="SECONDS",
                    help="a request without an answer but in flight longer than this was decided by the limiter "
                         f"(the gateway's rate-limit timeout; default {LIMITER_TIMEOUT:g})")
