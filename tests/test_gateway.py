"""The stand-in gateway driven in process through ASGI: Authorino answers, Limitador decisions, metrics per schema."""
from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_plan import DEPLOY, MANIFESTS, ROOT, limit_policy, secret, write

from chargeback.plan import load_plan
from chargeback.schema import SCHEMAS
from sim.faults import Faults
from sim.gateway import Gateway

SEED = (("premiumuser1", 8), ("freeuser1", 5), ("premiumuser2", 6))  # the seed demo's traffic
BODY = {"model": "Qwen/Qwen3-0.6B", "prompt": "Premium request", "max_tokens": 20}


def call(app: Gateway, method: str, path: str, headers: dict[str, str] | None = None,
         body: dict | bytes | None = None) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI app as uvicorn passes it (`path` decoded, `raw_path` as sent): status, headers,
    body."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else b""
    scope = {"type": "http", "method": method, "path": unquote(path), "raw_path": path.encode(),
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


def samples(app) -> dict[tuple[str, tuple], float]:
    """(metric, sorted labels) -> value, parsed back with prometheus_client (`app`: a gateway or a replica's app)."""
    text = call(app, "GET", "/metrics")[2].decode()
    return {(s.name.removesuffix("_total"), tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def gateway(schema: str = "seed", *paths: Path, **options) -> Gateway:
    return Gateway(load_plan(list(paths) or [DEPLOY]), SCHEMAS[schema], **options)


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
    app = gateway("telemetry", tmp_path, MANIFESTS / "telemetry-policy.yaml")
    assert complete(app, "alice_key") == 200
    assert samples(app)[("authorized_calls", (NS, ("tier", "free"), ("user", "alice")))] == 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


USERID = 'descriptors[0]["auth.identity.userid"]'
COMPILED = {tier: {"id": None, "namespace": "llm/vllm-httproute", "max_value": limit, "seconds": 120,
                   "name": f"{tier}-user-requests",
                   "conditions": [f'descriptors[0]["limit.{tier}_user_requests__{h}"] == "1"'], "variables": [USERID]}
            for tier, limit, h in (("free", 2, "b19516ff"), ("premium", 10, "3466dc78"),
                                   ("enterprise", 50, "23d1c320"))}


def get_json(app, path: str):
    status, headers, body = call(app, "GET", path)
    assert (status, headers[b"content-type"]) == (200, b"application/json")
    return json.loads(body)


def test_a_limited_request_gets_kuadrants_429() -> None:
    app = gateway("seed")
    assert [complete(app, "freeuser1_key") for _ in range(2)] == [200, 200]
    status, headers, body = call(app, "POST", "/v1/completions", {"Authorization": "APIKEY freeuser1_key"}, BODY)
    assert (status, headers[b"content-type"], body) == (429, b"text/plain", b"Too Many Requests\n")


def test_limits_endpoint_serves_the_limits_as_kuadrant_compiles_them() -> None:
    app = gateway("seed")
    assert get_json(app, "/limits/llm%2Fvllm-httproute") == [COMPILED[t] for t in ("free", "premium", "enterprise")]
    assert get_json(app, "/limits/llm%2fother-route") == []
    for path in ("/limits/llm/vllm-httproute", "/counters/llm/vllm-httproute", "/limits/", "/counters/"):
        assert call(app, "GET", path)[0] == 404, path


def test_counters_endpoint_lists_live_counters_with_truncated_expiry() -> None:
    clock = Clock()
    app = gateway("seed", clock=clock)
    for _ in range(3):
        complete(app, "freeuser2_key")
    clock.now = 1000.5
    complete(app, "premiumuser1_key")
    clock.now = 1030.4  # free expires in 89.6 s, premium in 90.1 s
    assert get_json(app, "/counters/llm%2Fvllm-httproute") == [
        {"limit": COMPILED["free"], "set_variables": {USERID: "freeuser2"}, "remaining": 0, "expires_in_seconds": 89},
        {"limit": COMPILED["premium"], "set_variables": {USERID: "premiumuser1"}, "remaining": 9,
         "expires_in_seconds": 90},
    ]
    assert get_json(app, "/counters/llm%2Fvllm-gateway") == []
    clock.now = 1120.0
    assert [c["set_variables"][USERID] for c in get_json(app, "/counters/llm%2Fvllm-httproute")] == ["premiumuser1"]


def test_a_token_counter_past_its_max_shows_limitadors_wrapped_remaining(tmp_path: Path) -> None:
    write(tmp_path, "trlp.yaml", limit_policy("free-tokens", "[{limit: 30, window: 1m}]", kind="TokenRateLimitPolicy"))
    app = gateway("fork", DEPLOY / "api-keys.yaml", DEPLOY / "auth-policy.yaml", tmp_path)
    assert [complete(app, "freeuser1_key") for _ in range(2)] == [200, 200]  # 22 tokens each: 44 of 30
    [counter] = get_json(app, "/counters/llm%2Fvllm-httproute")
    assert counter["remaining"] == 2**64 - 14
    assert (counter["limit"]["name"], counter["limit"]["seconds"], counter["limit"]["conditions"]) == (
        "free-tokens", 60, ['descriptors[0]["tokenlimit.free_tokens__' + hashlib.sha256(b"llm/free-tokens/free-tokens")
                            .hexdigest()[:8] + '"] == "1"'])


def test_status_endpoint_has_limitadors_fields() -> None:
    app = gateway("seed")
    status = get_json(app, "/status")
    assert list(status) == ["started_at", "config_applied_at", "config_version", "config_err_since"]
    started = datetime.strptime(status["started_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert 0 <= time.time() - started.timestamp() < 5
    assert status["config_applied_at"] == status["started_at"] and status["config_err_since"] is None
    assert status["config_version"] == app.config_version and len(app.config_version) == 16
    assert gateway("seed").config_version == app.config_version
    assert gateway("seed", DEPLOY, namespace="llm/other").config_version != app.config_version


def per_user(app, metric: str) -> dict[str, tuple[float, str | None]]:
    """user -> (value, group label) of one metric's series."""
    found = {}
    for (name, labels), value in samples(app).items():
        if name == metric:
            found[dict(labels)["user"]] = (value, dict(labels).get("group"))
    return found


def faulty(schema: str = "seed", *faults: str, **options) -> Gateway:
    return gateway(schema, faults=Faults.parse(list(faults)), **options)


@pytest.mark.parametrize("schema", ["seed", "telemetry", "fork"])
def test_mislabel_serves_another_group_for_one_user(schema: str) -> None:
    app = faulty(schema, "mislabel:freeuser1=premium")
    assert [complete(app, "freeuser1_key") for _ in range(3)] == [200, 200, 429]
    assert complete(app, "premiumuser1_key") == 200
    names = SCHEMAS[schema]
    group = {"fork": (None, None)}.get(schema, ("premium", "premium"))
    assert per_user(app, names.authorized) == {"freeuser1": (2, group[0]), "premiumuser1": (1, group[1])}
    assert per_user(app, names.limited) == {"freeuser1": (1, group[0])}


def test_fail_open_for_one_user_bypasses_the_limiter_every_time() -> None:
    app = faulty("seed", "fail-open:freeuser1")
    assert [complete(app, "freeuser1_key") for _ in range(5)] == [200] * 5
    assert [complete(app, "freeuser2_key") for _ in range(3)] == [200, 200, 429]
    assert per_user(app, "authorized_calls_with_user_and_group") == {"freeuser2": (2, "free")}
    assert per_user(app, "limited_calls_with_user_and_group") == {"freeuser2": (1, "free")}
    assert [c["set_variables"][USERID] for c in get_json(app, "/counters/llm%2Fvllm-httproute")] == ["freeuser2"]


def test_fail_open_without_a_user_lets_everyone_through_uncounted() -> None:
    app = faulty("seed", "fail-open")
    assert [complete(app, f"{user}_key") for user in ("freeuser1", "freeuser2") for _ in range(4)] == [200] * 8
    assert [k for k in samples(app) if k[0] != "limitador_up"] == []  # not even the namespace totals moved
    assert get_json(app, "/counters/llm%2Fvllm-httproute") == []


@pytest.mark.parametrize("fault, authorized, restarted", [("forget-after:2", 4, False), ("reset-after:2", 3, True)])
def test_forget_after_clears_the_windows_and_keeps_the_metrics(fault: str, authorized: int, restarted: bool) -> None:
    app = faulty("seed", fault)
    started = get_json(app, "/status")["started_at"]
    time.sleep(0.001)
    # the second request's count is forgotten with the window: two more fit before the limit
    assert [complete(app, "freeuser1_key") for _ in range(5)] == [200, 200, 200, 200, 429]
    assert per_user(app, "authorized_calls_with_user_and_group") == {"freeuser1": (authorized, "free")}
    assert per_user(app, "limited_calls_with_user_and_group") == {"freeuser1": (1, "free")}
    assert (get_json(app, "/status")["started_at"] != started) is restarted
    assert [complete(app, "freeuser1_key") for _ in range(3)] == [429] * 3  # once only


def test_model_429_is_the_model_servers_answer_after_the_limiter_counted_it() -> None:
    app = faulty("seed", "model-429:premiumuser1")
    assert complete(app, "freeuser1_key") == 200
    status, headers, body = call(app, "POST", "/v1/completions", {"Authorization": "APIKEY premiumuser1_key"}, BODY)
    assert (status, headers[b"content-type"]) == (429, b"application/json")
    assert json.loads(body) == {"error": {"message": "Rate limit reached for requests; please retry later.",
                                          "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
    assert [complete(app, "premiumuser1_key") for _ in range(2)] == [200, 200]
    assert per_user(app, "authorized_calls_with_user_and_group") == {"freeuser1": (1, "free"),
                                                                     "premiumuser1": (3, "premium")}
    assert per_user(app, "limited_calls_with_user_and_group") == {}
    remaining = {c["set_variables"][USERID]: c["remaining"] for c in get_json(app, "/counters/llm%2Fvllm-httproute")}
    assert remaining == {"freeuser1": 1, "premiumuser1": 7}


@pytest.mark.parametrize("storage, statuses, per_replica", [
    ("shared", [200, 200, 429, 429, 429, 429], (1, 2)),  # one set of counters: the limit holds across replicas
    ("separate", [200, 200, 200, 200, 429, 429], (2, 1)),  # each replica its own window: limit x replicas
])
def test_replicas_take_requests_in_turn_and_count_their_own(storage: str, statuses: list[int],
                                                             per_replica: tuple[int, int]) -> None:
    app = gateway("seed", replicas=2, replica_storage=storage)
    assert [complete(app, "freeuser1_key") for _ in range(6)] == statuses
    for replica in (app, app.admin_app(1)):
        assert (per_user(replica, "authorized_calls_with_user_and_group"),
                per_user(replica, "limited_calls_with_user_and_group")) == (
            {"freeuser1": (per_replica[0], "free")}, {"freeuser1": (per_replica[1], "free")})
        [counter] = get_json(replica, "/counters/llm%2Fvllm-httproute")
        assert (counter["set_variables"], counter["remaining"]) == ({USERID: "freeuser1"}, 0)
        assert get_json(replica, "/limits/llm%2Fvllm-httproute") == list(COMPILED.values())
        assert get_json(replica, "/status")["config_version"] == app.config_version
    assert call(app.admin_app(1), "POST", "/v1/completions", {"Authorization": "APIKEY freeuser1_key"}, BODY)[0] == 404


def test_bad_replica_options_are_one_error() -> None:
    with pytest.raises(ValueError,
                       match=r"^replicas: 2 with 'mirrored' storage; expected >= 1 with one of shared, separate$"):
        gateway("seed", replicas=2, replica_storage="mirrored")


def test_the_gateway_process_names_a_replica_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "sim.gateway", "--policy", str(DEPLOY), "--port", "0",
                                 "--replica-port", str(port)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (
        2, f"error: port {port} on 127.0.0.1 is in use (--replica-port): Address already in use\n")
