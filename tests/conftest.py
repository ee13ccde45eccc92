"""Shared fixtures of the suite's own tests, and their markers.

Markers: `e2e` (starts the local stand-in, a real Prometheus, Locust or another child process) and `slow` (an e2e
test of a minute or more). `pytest tests -m "not e2e"` runs the unit tests in seconds.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_plan import DEPLOY

from sim.stack import LocalStack


@pytest.fixture(scope="module")
def stack() -> Iterator[LocalStack]:
    """The local stand-in with the default manifests (gateway, model simulator, a real Prometheus), one per module;
    tests that need a fresh gateway restart it (`stack.restart_gateway()`)."""
    with LocalStack([str(DEPLOY)]) as running:
        yield running
