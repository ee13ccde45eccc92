"""What a tier user sends and how it reads the answer (no Locust here, so it is testable in plain pytest)."""
from __future__ import annotations

from typing import Any

import orjson

from scenarios import Stream

JSON_HEADERS = {"Content-Type": "application/json"}


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


def usage_of(content: bytes | None, streamed: bool) -> tuple[int, int, int] | None:
    """(prompt, completion, total) tokens from a response body, or from the last SSE frame that carries usage."""
    if not content:
        return None
    try:
        if streamed:
            frames = [line[6:] for line in content.splitlines() if line.startswith(b"data: {")]
            usage = next((u for u in (orjson.loads(f).get("usage") for f in reversed(frames)) if u), None)
        else:
            usage = orjson.loads(content).get("usage")
        return (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) if usage else None
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None


def verdict(status: int, expect_rejection: bool) -> str | None:
    """Why Locust should count this answer as a failure; None for a success (a 429 is an expected success)."""
    if expect_rejection:
        return None if status in (401, 403) else f"expected 401/403 from auth, got {status or 'no answer'}"
    if 200 <= status < 300 or status == 429:
        return None
    if status in (401, 403):
        return f"rejected by auth: {status}"
    return f"HTTP {status}" if status else "no answer (timeout or connection error)"
