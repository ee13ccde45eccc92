"""The ledger's feed: Locust's `request` event. Any request whose context names an `identity` (and its `tier`;
optionally the `sender`, the simulated user whose requests one clock orders, and the `model` it asks for, used
when the answer names none) is accounted, whatever user class
sent it; TierUser sets that context on every request."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from chargeback.ledger import ANY_SENDER

from .wire import answer_of, ledger_status, rate_limit_headers_of

if TYPE_CHECKING:
    from .sync import LedgerSync


class Accounting:
    """The `request` listener of one process: each answer into the process's current ledger."""

    def __init__(self, sync: LedgerSync, answered: Callable[[float, float], None]):
        self.sync = sync
        self.answered = answered  # (sent, done) of each request that got an answer

    def on_request(self, context: dict[str, Any] | None, response: Any, start_time: float | None = None,
                   response_time: float | None = None, exception: BaseException | None = None, **_: Any) -> None:
        identity = context.get("identity") if context else None
        if identity is None or start_time is None:
            return
        content = getattr(response, "content", None) if response is not None else None
        error = getattr(response, "error", None) or (exception if not getattr(response, "status_code", 0) else None)
        status = ledger_status(getattr(response, "status_code", 0) or 0, content, error)
        done = start_time + (response_time or 0.0) / 1000.0
        usage, model = answer_of(content) if 200 <= status < 300 else (None, "")
        self.sync.ledger.record(identity, context.get("tier", ""), start_time, done, status, usage,
                                context.get("sender", ANY_SENDER), model or context.get("model", ""),
                                rate_limit_headers_of(getattr(response, "headers", None)) if status > 0 else None)
        if status > 0:
            self.answered(start_time, done)
