"""The stand-in gateway driven in process through ASGI: Authorino answers, Limitador decisions, metrics per schema."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from chargeback.plan import load_plan
from chargeback.schema import SCHEMAS
from sim.gateway import Gateway
from test_plan import DEPLOY, REFERENCE, limit_policy, secret, write

SEED = (("premiumuser1", 8), ("freeuser1", 5), ("premiumuser2", 6))  # the seed demo's traffic
BODY = {"model": "Qwen/Qwen3-0.6B", "prompt": "Premium request", "max_tokens": 20}


def call(app: Gateway, method: str, path: str, headers: dict[str, str] | None = None,
         body: dict | bytes | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI app: status, headers, body."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    scope = {"type": "http", "method": method, "path": path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": raw, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def complete(app: Gateway, key: str | None, body: dict | None = None, path: str = "/v1/completions") -> int:
    headers = {"Authorization": f"APIKEY {key}"} if key else {}
    return call(app, "POST", path, headers, body or BODY)[0]


def samples(app: Gateway) -> dict[tuple[str, tuple], float]:
    """(metric, sorted labels) -> value, parsed back with prometheus_client."""
    text = call(app, "GET", "/metrics")[2].decode()
    return {(s.name.removesuffix("_total"), tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def gateway(schema: str = "seed", *paths: Path) -> Gateway:
    return Gateway(load_plan(list(paths) or [DEPLOY]), SCHEMAS[schema])


NS = ("limitador_namespace", "llm/vllm-httproute")


@pytest.mark.parametrize("schema, labels", [
    ("seed", lambda user, group: (("group", group), NS, ("user", user))),
    ("fork", lambda user, group: (NS, ("model", "Qwen/Qwen3-0.6B"), ("user", user))),
    ("telemetry", lambda user, group: (("group", group), NS, ("user", user))),
])
def test_seed_traffic_counts_exactly_under_each_schema(schema: str, labels) -> None:
    app = gateway(schema)
    statuses = {user: [complete(app, f"{user}_key") for _ in range(n)] for user, n in SEED}
    assert statuses == {"premiumuser1": [200] * 8, "freeuser1": [200, 200, 429, 429, 429], "premiumuser2": [200] * 6}
    names = SCHEMAS[schema]
    got = {k: v for k, v in samples(app).items() if k[0] in (names.authorized, names.limited)}
    assert got == {
        (names.authorized, labels("premiumuser1", "premium")): 8,
        (names.authorized, labels("freeuser1", "free")): 2,
        (names.authorized, labels("premiumuser2", "premium")): 6,
        (names.limited, labels("freeuser1", "free")): 3,
    }


def test_seed_schema_also_serves_limitadors_namespace_totals() -> None:
    app = gateway("seed")
    for user, n in SEED:
        for _ in range(n):
            complete(app, f"{user}_key")
    got = samples(app)
    assert got[("authorized_calls", (NS,))] == 16 and got[("limited_calls", (NS,))] == 3
    assert got[("limitador_up", ())] == 1
    text = call(app, "GET", "/metrics")[2].decode()
    assert "# TYPE authorized_calls_with_user_and_group counter\n" in text
    assert 'authorized_calls_with_user_and_group{group="free",limitador_namespace="llm/vllm-httproute",user="freeuser1"} 2.0' in text


def test_auth_answers_like_authorino_and_moves_no_counter(tmp_path: Path) -> None:
    write(tmp_path, "gold.yaml", secret("golduser", "gold"))
    app = gateway("seed", DEPLOY, tmp_path)
    status, headers, _ = call(app, "POST", "/v1/completions", {}, BODY)
    assert (status, headers[b"www-authenticate"], headers[b"x-ext-auth-reason"]) == (
        401, b'APIKEY realm="llm/chargeback-auth"', b"credential not found")
    status, headers, _ = call(app, "POST", "/v1/completions", {"Authorization": "APIKEY nobody_key"}, BODY)
    assert (status, headers[b"x-ext-auth-reason"]) == (401, b"the API Key provided is invalid")
    assert complete(app, None) == 401
    assert call(app, "POST", "/v1/completions", {"Authorization": "Bearer freeuser1_key"}, BODY)[0] == 401
    assert complete(app, "golduser_key") == 403
    assert [k for k in samples(app) if k[0] != "limitador_up"] == []


def test_unindexed_secret_gets_401(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("nolabel", "free", managed=False))
    app = gateway("seed", tmp_path, DEPLOY / "auth-policy.yaml")
    assert complete(app, "nolabel_key") == 401


def test_model_errors_after_the_limiter_still_count_as_authorized() -> None:
    app = gateway("seed")
    assert complete(app, "enterpriseuser1_key", {"model": "no-such-model", "prompt": "x"}) == 404
    assert call(app, "POST", "/v1/completions", {"Authorization": "APIKEY enterpriseuser1_key"}, b"{not json")[0] == 400
    assert samples(app)[("authorized_calls", (NS,))] == 2


def test_limits_and_counters_endpoints() -> None:
    app = gateway("seed")
    for _ in range(3):
        complete(app, "freeuser2_key")
    limits = json.loads(call(app, "GET", "/limits/llm/vllm-httproute")[2])
    assert [(l["name"], l["max_value"], l["seconds"]) for l in limits] == [
        ("free-user-requests", 2, 120.0), ("premium-user-requests", 10, 120.0), ("enterprise-user-requests", 50, 120.0)]
    [counter] = json.loads(call(app, "GET", "/counters/llm/vllm-httproute")[2])
    assert counter["set_variables"] == {"auth.identity.userid": "freeuser2"}
    assert counter["remaining"] == 0 and 0 < counter["expires_in_seconds"] <= 120
    assert json.loads(call(app, "GET", "/counters/llm/vllm-gateway")[2]) == []


def test_token_limit_allows_the_crossing_request_then_limits(tmp_path: Path) -> None:
    write(tmp_path, "trlp.yaml", limit_policy("free-tokens", "[{limit: 30, window: 1m}]", kind="TokenRateLimitPolicy"))
    app = gateway("fork", DEPLOY / "api-keys.yaml", DEPLOY / "auth-policy.yaml", tmp_path)
    assert [complete(app, "freeuser1_key") for _ in range(3)] == [200, 200, 429]  # 22 tokens each: 0, 22 < 30, 44
    user = (NS, ("model", "Qwen/Qwen3-0.6B"), ("user", "freeuser1"))
    got = samples(app)
    assert (got[("authorized_calls", user)], got[("limited_calls", user)], got[("authorized_token_hits", user)]) == (2, 1, 44)


def test_limit_reading_request_attributes_is_evaluated_per_request(tmp_path: Path) -> None:
    write(tmp_path, "chat.yaml", limit_policy("chat-only", "[{limit: 1, window: 1m}]", 'request.path == "/v1/chat/completions"'))
    app = gateway("seed", DEPLOY / "api-keys.yaml", DEPLOY / "auth-policy.yaml", tmp_path)
    chat = {"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}]}
    assert [complete(app, "premiumuser1_key", chat, "/v1/chat/completions") for _ in range(2)] == [200, 429]
    assert [complete(app, "premiumuser1_key") for _ in range(3)] == [200, 200, 200]


def test_telemetry_policy_labels(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("alice", "free"))
    write(tmp_path, "auth.yaml", (DEPLOY / "auth-policy.yaml").read_text().replace(
        "                groups:\n", "                tier:\n"
        "                  selector: auth.identity.metadata.annotations.kuadrant\\.io/groups\n"
        "                groups:\n"))
    app = gateway("telemetry", tmp_path, REFERENCE / "maas-telemetry-policy.yaml")
    assert complete(app, "alice_key") == 200
    assert samples(app)[("authorized_calls", (NS, ("tier", "free"), ("user", "alice")))] == 1
