"""Pure pieces of the Locust users: request bodies, usage parsing, verdicts, class names, --policy lookup."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_plan import ROOT

from chargeback.ledger import MODEL_429, NO_ANSWER, NOT_CONNECTED, Ledger
from chargeback.plan import DEFAULT_POLICY
from scenarios import INVALID_CLASS, Stream, class_name
from users.accounting import Accounting
from users.wire import answer_of, ledger_status, request_body, verdict


def test_request_bodies() -> None:
    assert json.loads(request_body(Stream(prompt="Free request", max_tokens=10))) == {
        "model": "Qwen/Qwen3-0.6B", "prompt": "Free request", "max_tokens": 10}
    assert json.loads(request_body(Stream(endpoint="chat", stream=True, prompt="hi", max_tokens=3))) == {
        "model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
        "stream": True, "stream_options": {"include_usage": True}}


def test_usage_and_model_from_json_and_from_the_last_sse_frame() -> None:
    assert answer_of(b'{"model": "m", "usage": {"prompt_tokens": 2, "completion_tokens": 20, "total_tokens": 22}}'
                     ) == ((2, 20, 22), "m")
    sse = (b'data: {"model": "m", "choices": [{"text": "a "}]}\n\n'
           b'data: {"model": "m", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 3, '
           b'"total_tokens": 4}}\n\ndata: [DONE]\n\n')
    assert answer_of(sse) == ((1, 3, 4), "m")
    assert answer_of(b'data: {"model": "m", "choices": []}\n\ndata: [DONE]\n\n') == (None, "")
    assert answer_of(b"<html>") == (None, "") and answer_of(None) == (None, "")


def test_verdicts() -> None:
    assert [verdict(s, False) for s in (200, 429, 401, 500, NO_ANSWER, NOT_CONNECTED, MODEL_429)] == [
        None, None, "rejected by auth: 401", "HTTP 500", "no answer (timeout or connection reset)",
        "no connection to the gateway", "429 from the model server (after the limiter)"]
    assert [verdict(s, True) for s in (401, 403, 200, NOT_CONNECTED)] == [
        None, None, "expected 401/403 from auth, got 200", "expected 401/403 from auth, got no connection to the gateway"]


def test_the_ledger_tells_whose_429_and_whether_a_connection_was_made() -> None:
    assert ledger_status(429, b"Too Many Requests\n", None) == 429  # Kuadrant's (the wasm-shim's body)
    assert ledger_status(429, b'{"error": {"type": "rate_limit_error"}}', None) == MODEL_429
    assert ledger_status(200, b"{}", None) == 200
    assert ledger_status(0, None, ConnectionRefusedError(111, "Connection refused")) == NOT_CONNECTED
    assert ledger_status(0, None, TimeoutError("timed out")) == NO_ANSWER
    assert ledger_status(0, None, ConnectionResetError(104, "reset")) == NO_ANSWER


def test_class_names() -> None:
    assert [class_name(t) for t in ("premium", "gold-plus", INVALID_CLASS)] == ["PremiumUser", "GoldPlusUser", "InvalidKeyUser"]


def policy_of(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> list[str]:
    """The manifest paths Locust's own parser gives (in a child process: importing Locust patches the interpreter)."""
    code = "import sys; from users.options import add_options, policy_of; from locust import events; " \
           "events.init_command_line_parser.add_listener(add_options); print(repr(policy_of(sys.argv[1:])))"
    environ = {k: v for k, v in os.environ.items() if k != "CHARGEBACK_POLICY"}
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60, env={**environ, "PYTHONPATH": str(ROOT), **(env or {})})
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


@pytest.mark.e2e
def test_policy_is_read_from_locusts_own_options(tmp_path: Path) -> None:
    assert policy_of("--policy", "a.yaml", "--policy=b", env={"CHARGEBACK_POLICY": "x"}) == ["a.yaml", "b"]
    assert policy_of(env={"CHARGEBACK_POLICY": "[x, y]"}) == ["x", "y"]
    assert policy_of(cwd=tmp_path) == [DEFAULT_POLICY]
    (tmp_path / "locust.conf").write_text("policy = from-conf.yaml\n")
    assert policy_of(cwd=tmp_path) == ["from-conf.yaml"]


class Answer:
    """What Locust's request event carries as `response`: a status, a body and the connection error, if any."""

    def __init__(self, status_code: int, content: bytes | None = None, error: BaseException | None = None):
        self.status_code, self.content, self.error = status_code, content, error


def test_the_request_event_feeds_the_ledger_for_any_request_whose_context_names_an_identity() -> None:
    sync, answered = SimpleNamespace(ledger=Ledger()), []  # the process's LedgerSync: its current ledger
    accounting = Accounting(sync, lambda sent, done: answered.append((sent, done)))
    ledger = sync.ledger
    usage = b'{"usage": {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}}'
    accounting.on_request(context={"identity": "premiumuser1", "tier": "premium", "sender": 3},
                          response=Answer(200, usage), start_time=100.0, response_time=250.0, exception=None)
    accounting.on_request(context={"identity": "premiumuser1", "tier": "premium"},  # no sender: ANY_SENDER
                          response=Answer(429, b"Too Many Requests\n"), start_time=101.0, response_time=5.0)
    accounting.on_request(context={"identity": "freeuser1", "tier": "free"},
                          response=Answer(0, None, ConnectionRefusedError()), start_time=102.0, response_time=1.0)
    accounting.on_request(context={}, response=Answer(200, usage), start_time=103.0, response_time=1.0)  # not ours
    accounting.on_request(context=None, response=Answer(200, usage), start_time=103.0, response_time=1.0)
    premium, free = ledger.accounts["premiumuser1"], ledger.accounts["freeuser1"]
    assert (premium.sent, premium.authorized, premium.limited, premium.total_tokens) == (2, 1, 1, 10)
    assert premium.entries() == [(100.0, 100.25, 200, 3), (101.0, 101.005, 429, -1)]
    assert (free.sent, free.errors, free.entries()) == (1, 1, [(102.0, 102.001, NOT_CONNECTED, -1)])
    assert set(ledger.accounts) == {"premiumuser1", "freeuser1"} and answered == [(100.0, 100.25), (101.0, 101.005)]
