"""Limitador's admin API, read only: `GET /status` (when it started), `GET /counters/{ns}` (the live windows) and
`GET /limits/{ns}` (the limits it enforces).

The namespace is `<HTTPRoute namespace>/<HTTPRoute name>`, URL-encoded in the path (an unencoded `/` gives 404).
Never `POST /check_and_report` or `/report` here: they change counters (and metrics).
"""
from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import requests


class LimitadorError(RuntimeError):
    """Limitador's admin API cannot be read; one line naming the URL."""


class LimitadorAdmin:
    def __init__(self, url: str, namespace: str, timeout: float = 5.0):
        self.url = url.rstrip("/")
        self.namespace = namespace
        self.timeout = timeout

    def _get(self, path: str) -> Any:
        url = f"{self.url}{path}"
        try:
            response = requests.get(url, timeout=self.timeout)
        except requests.RequestException as exc:
            raise LimitadorError(f"Limitador at {url}: cannot read: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise LimitadorError(f"Limitador at {url}: HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError:
            raise LimitadorError(f"Limitador at {url}: not JSON") from None

    def status(self) -> dict[str, Any]:
        """`GET /status`: `started_at` changes when Limitador restarts (counters, windows and metrics gone)."""
        found = self._get("/status")
        return found if isinstance(found, dict) else {}

    def counters(self) -> dict[str, Any]:
        """`GET /counters/{ns}` with the moments the request was sent and answered: `{"counters", "read"}`."""
        sent = time.time()
        found = self._get(f"/counters/{quote(self.namespace, safe='')}")
        if not isinstance(found, list):
            raise LimitadorError(f"Limitador at {self.url}: /counters gave {type(found).__name__}, not a list")
        return {"counters": found, "read": [sent, time.time()]}

    def limits(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """`GET /limits/{ns}` (this admin's namespace unless given): the limit objects Limitador holds there."""
        path = f"/limits/{quote(namespace or self.namespace, safe='')}"
        found = self._get(path)
        if not isinstance(found, list) or not all(isinstance(limit, dict) for limit in found):
            raise LimitadorError(f"Limitador at {self.url}{path}: not a list of limit objects")
        return found
