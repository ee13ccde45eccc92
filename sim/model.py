"""Deterministic OpenAI-compatible model simulator, usable in-process or standalone via uvicorn."""
from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .asgi import read_body, respond, serve_lifespan

JSON = "application/json"
SSE = "text/event-stream"
_WORDS = tuple(
    "the quick brown fox jumps over a lazy dog while simulated tokens stream from an inference engine".split()
)
_WORDS_SP = tuple(w + " " for w in _WORDS)
_PRECOMPUTED = 8192
_TEXT = " ".join(_WORDS[i % len(_WORDS)] for i in range(_PRECOMPUTED))
_ENDS = tuple(itertools.accumulate(len(_WORDS[i % len(_WORDS)]) + 1 for i in range(_PRECOMPUTED)))
_DONE = b"data: [DONE]\n\n"


def _completion_text(n: int) -> str:
    """Return ``n`` words taken cyclically from the fixed word list."""
    if n <= _PRECOMPUTED:
        return _TEXT[: _ENDS[n - 1] - 1]
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(n))


@dataclass(frozen=True)
class ModelConfig:
    models: tuple[str, ...] = ("Qwen/Qwen3-0.6B",)
    time_to_first_token: float = 0.0
    time_per_token: float = 0.0
    default_max_tokens: int = 16


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(slots=True)
class ModelResponse:
    status: int
    content_type: str
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    usage: Usage | None = None


_usage = functools.lru_cache(maxsize=4096)(Usage)  # frozen, so instances can be shared


def _error(status: int, message: str) -> ModelResponse:
    """Build an OpenAI/vLLM-shaped JSON error response."""
    err = {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    return ModelResponse(status, JSON, orjson.dumps(err))


def rate_limit_error() -> ModelResponse:
    """The model server's own 429 (OpenAI's shape): it comes after the limiter authorized the request."""
    err = {"error": {"message": "Rate limit reached for requests; please retry later.", "type": "rate_limit_error",
                     "code": "rate_limit_exceeded"}}
    return ModelResponse(429, JSON, orjson.dumps(err))


class ModelSimulator:
    """Answers /v1/models, /v1/completions and /v1/chat/completions deterministically."""

    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        self.config = config
        self._models = frozenset(config.models)
        self._ttft = config.time_to_first_token
        self._tpt = config.time_per_token
        self._ids = itertools.count(1)
        self._routes = {"/v1/models": ("GET", None), "/v1/completions": ("POST", False),
                        "/v1/chat/completions": ("POST", True)}
        data = [{"id": m, "object": "model", "owned_by": "sim"} for m in config.models]
        self._models_body = orjson.dumps({"object": "list", "data": data})

    async def respond(self, method: str, path: str, payload: dict | None) -> ModelResponse:
        """Route one request and return its (possibly streaming) response."""
        route = self._routes.get(path)
        if route is None:
            return _error(404, f"Route {path} not found.")
        if method != route[0]:
            return _error(405, f"Method {method} not allowed for {path}.")
        chat = route[1]
        if chat is None:
            return ModelResponse(200, JSON, self._models_body)
        if not isinstance(payload, dict):
            return _error(400, "Request body must be a JSON object.")
        model = payload.get("model")
        if model is None:
            return _error(400, "Missing required parameter: 'model'.")
        if not isinstance(model, str) or model not in self._models:
            return _error(404, f"The model `{model}` does not exist.")
        if chat:
            messages = payload.get("messages")
            if not isinstance(messages, list) or not messages:
                return _error(400, "'messages' must be a non-empty list.")
            prompt = sum(len(m["content"].split()) for m in messages
                         if isinstance(m, dict) and isinstance(m.get("content"), str))
            field = "max_completion_tokens" if payload.get("max_completion_tokens") is not None else "max_tokens"
        else:
            text = payload.get("prompt")
            if isinstance(text, list) and all(isinstance(s, str) for s in text):
                prompt = sum(len(s.split()) for s in text)
            elif isinstance(text, str):
                prompt = len(text.split())
            else:
                return _error(400, "'prompt' must be a string or a list of strings.")
            field = "max_tokens"
        n = payload.get(field)
        if n is None:
            n = self.config.default_max_tokens
        elif type(n) is not int or n < 1:
            return _error(400, f"'{field}' must be a positive integer.")
        prompt = prompt or 1
        usage = _usage(prompt, n, prompt + n)
        usage_d = {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}
        rid = next(self._ids)
        if payload.get("stream") is True:
            opts = payload.get("stream_options")
            include = isinstance(opts, dict) and opts.get("include_usage") is True
            return ModelResponse(200, SSE, chunks=self._stream(chat, rid, model, n, usage_d if include else None),
                                 usage=usage)
        delay = self._ttft + self._tpt * n
        if delay > 0:
            await asyncio.sleep(delay)
        if chat:
            out = {"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()),
                   "model": model, "choices": [{"index": 0, "message": {"role": "assistant",
                   "content": _completion_text(n)}, "finish_reason": "length"}], "usage": usage_d}
        else:
            out = {"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()),
                   "model": model, "choices": [{"index": 0, "text": _completion_text(n), "logprobs": None,
                   "finish_reason": "length"}], "usage": usage_d}
        return ModelResponse(200, JSON, orjson.dumps(out), usage=usage)

    async def _stream(self, chat: bool, rid: int, model: str, n: int,
                      usage: dict[str, int] | None) -> AsyncIterator[bytes]:
        """Yield one SSE frame per token, an optional usage frame, then [DONE]."""
        head = ({"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk"} if chat
                else {"id": f"cmpl-{rid}", "object": "text_completion"})
        head["created"] = int(time.time())
        head["model"] = model
        if self._ttft > 0:
            await asyncio.sleep(self._ttft)
        for i in range(n):
            if i and self._tpt > 0:
                await asyncio.sleep(self._tpt)
            word = _WORDS_SP[i % len(_WORDS_SP)]
            finish = "length" if i == n - 1 else None
            if chat:
                delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
                choice = {"index": 0, "delta": delta, "finish_reason": finish}
            else:
                choice = {"index": 0, "text": word, "logprobs": None, "finish_reason": finish}
            yield b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"
        if usage is not None:
            yield b"data: " + orjson.dumps({**head, "choices": [], "usage": usage}) + b"\n\n"
        yield _DONE


def asgi_app(sim: ModelSimulator) -> Callable[..., Awaitable[None]]:
    """Wrap ``sim`` in a minimal raw ASGI3 application."""

    async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict]],
                  send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        try:
            payload = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            resp = _error(400, "Invalid JSON body.")
        else:
            resp = await sim.respond(scope["method"], scope["path"], payload)
        await respond(send, resp.status, resp.content_type, resp.body, resp.chunks)

    return app


if __name__ == "__main__":
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--model", action="append", help="served model name (repeatable)")
    parser.add_argument("--ttft", type=float, default=0.0, help="time to first token, seconds")
    parser.add_argument("--per-token", type=float, default=0.0, help="inter-token latency, seconds")
    args = parser.parse_args()
    cfg = ModelConfig(time_to_first_token=args.ttft, time_per_token=args.per_token)
    if args.model:
        cfg = ModelConfig(tuple(args.model), args.ttft, args.per_token)
    uvicorn.run(asgi_app(ModelSimulator(cfg)), host=args.host, port=args.port, log_level="warning")
