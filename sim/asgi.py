"""The few raw-ASGI steps the stand-in's servers share (no framework: the gateway's hot path stays short)."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


async def read_body(receive: Receive) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer uvicorn's startup and shutdown events."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send: Send, status: int, content_type: str, body: bytes = b"",
                  chunks: AsyncIterator[bytes] | None = None, headers: Headers | None = None) -> None:
    """Send a whole body, or stream `chunks` when given."""
    all_headers = [(b"content-type", content_type.encode())] + (headers or [])
    if chunks is None:
        all_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": body})
        return
    all_headers.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    async for frame in chunks:
        await send({"type": "http.response.body", "body": frame, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
