"""pytest options for the post-run checks (`pytest checks/ --run runs/<id> ...`)."""
from __future__ import annotations

import pytest

from chargeback.schema import SCHEMAS


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chargeback", "post-run verification (checks/)")
    group.addoption("--run", metavar="DIR", help="the run record to verify: runs/<run-id> or runs/latest")
    group.addoption("--prometheus-url", metavar="URL", help="Prometheus holding the gateway's counters")
    group.addoption("--metrics-url", metavar="URL", help="a Limitador-style /metrics URL, when there is no Prometheus")
    group.addoption("--schema", choices=sorted(SCHEMAS), help="metric names (default: detected)")
    group.addoption("--job", metavar="NAME", help="Prometheus scrape job of the gateway's metrics (default: any)")
