"""What a tier user sends and how it reads the answer (no Locust here, so it is testable in plain pytest)."""
from __future__ import annotations

import errno
import socket
from typing import Any

import orjson

from chargeback.ledger import MODEL_429, NO_ANSWER, NO_HEADER, NOT_CONNECTED
from scenarios import Stream

JSON_HEADERS = {"Content-Type": "application/json"}
KUADRANT_429 = b"Too Many Requests"  # the body of the wasm-shim's 429 (with a newline)
NO_ROUTE = (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


def request_body(stream: Stream) -> bytes:
    """The OpenAI request a stream sends."""
    body: dict[str, Any] = {"model": stream.model, "max_tokens": stream.max_tokens}
    if stream.endpoint == "chat":
        body["messages"] = [{"role": "user", "content": stream.prompt}]
    else:
        body["prompt"] = stream.prompt
    if stream.stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return orjson.dumps(body)


def answer_of(content: bytes | None) -> tuple[tuple[int, int, int] | None, str]:
    """The (prompt, completion, total) tokens (None without usage) and the model ("" when none is named) of a JSON
    response body, or of the last server-sent event that carries usage (a streamed answer)."""
    if not content:
        return None, ""
    try:
        if content.lstrip()[:1] == b"{":
            body = orjson.loads(content)
        else:
            frames = (orjson.loads(line[6:]) for line in reversed(content.splitlines()) if line.startswith(b"data: {"))
            body = next((f for f in frames if f.get("usage")), {})
        usage, model = body.get("usage"), body.get("model")
        model = model if isinstance(model, str) else ""
        return ((usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) if usage else None), model
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None, ""


def ledger_status(status: int, content: bytes | None, error: BaseException | None) -> int:
    """The status the ledger records for one answer: the HTTP status, but MODEL_429 for a 429 that is not
    Kuadrant's (the model server's, counted authorized by the limiter), NOT_CONNECTED when no connection was made,
    NO_ANSWER when a sent request got no answer."""
    if not status:
        never = isinstance(error, (ConnectionRefusedError, socket.gaierror)) or (
            isinstance(error, OSError) and error.errno in NO_ROUTE)
        return NOT_CONNECTED if never else NO_ANSWER
    if status == 429 and (content or b"").strip() != KUADRANT_429:
        return MODEL_429
    return status


def verdict(status: int, expect_rejection: bool) -> str | None:
    """Why Locust should count this answer (a ledger status) as a failure; None for a success (Kuadrant's 429 is
    an expected success)."""
    words = {NO_ANSWER: "no answer (timeout or connection reset)", NOT_CONNECTED: "no connection to the gateway",
             MODEL_429: "429 from the model server (after the limiter)"}
    if expect_rejection:
        return None if status in (401, 403) else f"expected 401/403 from auth, got {words.get(status, status)}"
    if 200 <= status < 300 or status == 429:
        return None
    if status in (401, 403):
        return f"rejected by auth: {status}"
    return words.get(status, f"HTTP {status}")


def rate_limit_headers_of(headers: Any) -> tuple[int, int, str] | None:
    """Limitador's rate-limit headers of an answer (DRAFT_VERSION_03): X-RateLimit-Remaining, X-RateLimit-Reset
    (NO_HEADER when absent: Limitador before v2.4.0) and the X-RateLimit-Limit text; None when the answer carried
    none, or unreadable ones."""
    remaining = headers.get("x-ratelimit-remaining") if headers else None
    limit = headers.get("x-ratelimit-limit") if remaining is not None else None
    if limit is None:
        return None
    reset = headers.get("x-ratelimit-reset")
    try:
        remaining, reset = int(remaining), NO_HEADER if reset is None else int(reset)
    except ValueError:
        return None
    return (remaining, reset, str(limit)) if 0 <= remaining < 2**63 and -1 <= reset < 2**31 else None
