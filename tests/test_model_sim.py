"""Tests for the deterministic OpenAI-compatible model simulator."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest
import uvicorn

from sim.model import ModelConfig, ModelSimulator, Usage, asgi_app

MODEL = "Qwen/Qwen3-0.6B"


def call(sim: ModelSimulator, method: str, path: str, payload=None):
    return asyncio.run(sim.respond(method, path, payload))


def collect(resp) -> list[bytes]:
    async def run() -> list[bytes]:
        return [frame async for frame in resp.chunks]
    return asyncio.run(run())


def test_completion_usage_and_text() -> None:
    resp = call(ModelSimulator(), "POST", "/v1/completions",
                {"model": MODEL, "prompt": "Premium request", "max_tokens": 20})
    assert (resp.status, resp.content_type, resp.chunks) == (200, "application/json", None)
    assert resp.usage == Usage(2, 20, 22)
    body = orjson.loads(resp.body)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == MODEL and isinstance(body["created"], int)
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22}
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] == "length"
    assert len(choice["text"].split()) == 20 and choice["text"] == choice["text"].strip()


def test_completion_defaults_list_prompt_and_unique_ids() -> None:
    sim = ModelSimulator(ModelConfig(default_max_tokens=7))
    a = call(sim, "POST", "/v1/completions", {"model": MODEL, "prompt": ["one two", "three"]})
    b = call(sim, "POST", "/v1/completions", {"model": MODEL, "prompt": ""})
    assert a.usage == Usage(3, 7, 10)
    assert b.usage == Usage(1, 7, 8)  # min 1 prompt token
    assert orjson.loads(a.body)["id"] != orjson.loads(b.body)["id"]
    big = call(sim, "POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 10000})
    assert len(orjson.loads(big.body)["choices"][0]["text"].split()) == 10000


def test_chat_usage_counts_message_words() -> None:
    messages = [{"role": "system", "content": "You are helpful"},
                {"role": "user", "content": "  hello   there world "}]
    resp = call(ModelSimulator(), "POST", "/v1/chat/completions",
                {"model": MODEL, "messages": messages, "max_completion_tokens": 4})
    assert resp.status == 200 and resp.usage == Usage(6, 4, 10)
    body = orjson.loads(resp.body)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert len(choice["message"]["content"].split()) == 4
    fallback = call(ModelSimulator(), "POST", "/v1/chat/completions",
                    {"model": MODEL, "messages": messages, "max_tokens": 3})
    assert fallback.usage == Usage(6, 3, 9)


def test_models_listing() -> None:
    resp = call(ModelSimulator(ModelConfig(models=("a", "b"))), "GET", "/v1/models")
    assert resp.status == 200 and resp.usage is None
    assert orjson.loads(resp.body) == {"object": "list", "data": [
        {"id": "a", "object": "model", "owned_by": "sim"}, {"id": "b", "object": "model", "owned_by": "sim"}]}


def parse_frames(frames: list[bytes]) -> list[dict]:
    assert frames[-1] == b"data: [DONE]\n\n"
    out = []
    for frame in frames[:-1]:
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        out.append(orjson.loads(frame[6:]))
    return out


@pytest.mark.parametrize("include_usage", [False, True])
def test_streaming_completion(include_usage: bool) -> None:
    payload = {"model": MODEL, "prompt": "a b c", "max_tokens": 5, "stream": True,
               "stream_options": {"include_usage": include_usage}}
    resp = call(ModelSimulator(), "POST", "/v1/completions", payload)
    assert resp.status == 200 and resp.content_type == "text/event-stream"
    assert resp.usage == Usage(3, 5, 8)
    objs = parse_frames(collect(resp))
    content = [o for o in objs if o["choices"]]
    assert len(content) == 5
    assert all(o["object"] == "text_completion" for o in objs)
    assert all(c["choices"][0]["text"].endswith(" ") for c in content)
    assert [c["choices"][0]["finish_reason"] for c in content] == [None] * 4 + ["length"]
    assert len("".join(c["choices"][0]["text"] for c in content).split()) == 5
    usage_frames = [o for o in objs if not o["choices"]]
    if include_usage:
        assert usage_frames == [objs[-1]]
        assert objs[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    else:
        assert usage_frames == [] and len(objs) == 5


def test_streaming_chat() -> None:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
               "stream": True, "stream_options": {"include_usage": True}}
    resp = call(ModelSimulator(), "POST", "/v1/chat/completions", payload)
    objs = parse_frames(collect(resp))
    assert len(objs) == 4 and all(o["object"] == "chat.completion.chunk" for o in objs)
    deltas = [o["choices"][0]["delta"] for o in objs[:3]]
    assert deltas[0]["role"] == "assistant" and all("role" not in d for d in deltas[1:])
    assert all(d["content"] for d in deltas)
    assert objs[2]["choices"][0]["finish_reason"] == "length"
    assert objs[3]["choices"] == [] and objs[3]["usage"]["total_tokens"] == 4


def error_of(resp) -> tuple[int, str]:
    err = orjson.loads(resp.body)["error"]
    assert resp.content_type == "application/json" and resp.usage is None
    assert err["type"] == "invalid_request_error" and err["code"] == resp.status
    return resp.status, err["message"]


@pytest.mark.parametrize("method,path,payload,expected", [
    ("POST", "/v1/completions", {"model": "nope", "prompt": "x"}, (404, "The model `nope` does not exist.")),
    ("POST", "/v1/completions", {"prompt": "x"}, (400, "Missing required parameter: 'model'.")),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 0},
     (400, "'max_tokens' must be a positive integer.")),
    ("POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": "5"},
     (400, "'max_tokens' must be a positive integer.")),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "max_completion_tokens": -1},
     (400, "'max_completion_tokens' must be a positive integer.")),
    ("POST", "/v1/completions", {"model": MODEL}, (400, "'prompt' must be a string or a list of strings.")),
    ("POST", "/v1/chat/completions", {"model": MODEL, "messages": []},
     (400, "'messages' must be a non-empty list.")),
    ("POST", "/v1/completions", None, (400, "Request body must be a JSON object.")),
    ("POST", "/v1/completions", [1, 2], (400, "Request body must be a JSON object.")),
    ("POST", "/v1/embeddings", {}, (404, "Route /v1/embeddings not found.")),
    ("GET", "/v1/completions", None, (405, "Method GET not allowed for /v1/completions.")),
    ("POST", "/v1/models", {}, (405, "Method POST not allowed for /v1/models.")),
])
def test_errors(method: str, path: str, payload, expected: tuple[int, str]) -> None:
    assert error_of(call(ModelSimulator(), method, path, payload)) == expected


def test_latency_lower_bound() -> None:
    sim = ModelSimulator(ModelConfig(time_to_first_token=0.05, time_per_token=0.01))
    start = time.perf_counter()
    resp = call(sim, "POST", "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 5})
    assert resp.status == 200
    assert time.perf_counter() - start >= 0.1


def test_zero_latency_never_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    async def boom(_: float) -> None:
        raise AssertionError("sleep called")
    monkeypatch.setattr(asyncio, "sleep", boom)
    sim = ModelSimulator()
    assert call(sim, "POST", "/v1/completions", {"model": MODEL, "prompt": "x"}).status == 200
    resp = call(sim, "POST", "/v1/completions", {"model": MODEL, "prompt": "x", "stream": True})
    assert len(collect(resp)) == 17


def test_asgi_app_under_uvicorn() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(asgi_app(ModelSimulator()), host="127.0.0.1", port=port,
                                           log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}"

        def post(path: str, data: bytes):
            req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
            return urllib.request.urlopen(req, timeout=5)

        with post("/v1/completions", orjson.dumps({"model": MODEL, "prompt": "Premium request",
                                                   "max_tokens": 20})) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "application/json"
            assert orjson.loads(r.read())["usage"]["total_tokens"] == 22
        with pytest.raises(urllib.error.HTTPError) as exc:
            post("/v1/completions", b"{not json")
        assert exc.value.code == 400
        assert orjson.loads(exc.value.read())["error"]["message"] == "Invalid JSON body."
        body = orjson.dumps({"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True})
        with post("/v1/completions", body) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            frames = r.read().split(b"\n\n")
        assert frames[-2:] == [b"data: [DONE]", b""] and len(frames) == 5
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()
