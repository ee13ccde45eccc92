"""chargeback.limits: the Plan's limits compiled into Limitador limits exactly as kuadrant-operator does."""
from __future__ import annotations

from pathlib import Path

from test_plan import DEPLOY, limit_policy, write

from chargeback.limits import compiled_limits, limit_identifier
from chargeback.plan import load_plan

USERID = 'descriptors[0]["auth.identity.userid"]'


def test_the_demo_policy_compiles_to_kuadrants_limits() -> None:
    plan = load_plan([DEPLOY])
    assert compiled_limits(plan, "llm/vllm-httproute") == [
        {"id": None, "namespace": "llm/vllm-httproute", "max_value": limit, "seconds": 120, "name": name,
         "conditions": [f'descriptors[0]["{key}"] == "1"'], "variables": [USERID]}
        for name, limit, key in (("free-user-requests", 2, "limit.free_user_requests__b19516ff"),
                                 ("premium-user-requests", 10, "limit.premium_user_requests__3466dc78"),
                                 ("enterprise-user-requests", 50, "limit.enterprise_user_requests__23d1c320"))]


def test_one_limit_per_rate_with_whole_seconds_and_every_counter(tmp_path: Path) -> None:
    text = limit_policy("burst.v2", "[{limit: 2, window: 1500ms}, {limit: 5, window: 500ms}, {limit: 9, window: 1h}]")
    write(tmp_path, "rlp.yaml", text.replace("counters: [", "counters: [{expression: request.path}, "))
    [fast, faster, hourly] = compiled_limits(load_plan([tmp_path]), "ns/route")
    assert [(l["max_value"], l["seconds"]) for l in (fast, faster, hourly)] == [(2, 1), (5, 0), (9, 3600)]
    assert fast["conditions"] == ['descriptors[0]["limit.burst_v2__05cd073a"] == "1"']
    assert fast["variables"] == ['descriptors[0]["request.path"]', USERID]
    assert fast["name"] == "burst.v2" and fast["namespace"] == "ns/route"


def test_token_limits_keep_their_name_and_prefix_the_descriptor_key(tmp_path: Path) -> None:
    write(tmp_path, "trlp.yaml", limit_policy("foo", "[{limit: 100, window: 1m}]", kind="TokenRateLimitPolicy")
          .replace("namespace: llm", "namespace: testNS").replace("name: foo,", "name: trlpA,"))
    [limit] = load_plan([tmp_path]).limits
    assert limit_identifier(limit) == "tokenlimit.foo__13adad8e"  # kuadrant-operator's own unit test value
    [compiled] = compiled_limits(load_plan([tmp_path]), "llm/vllm-httproute")
    assert (compiled["name"], compiled["conditions"]) == ("foo", ['descriptors[0]["tokenlimit.foo__13adad8e"] == "1"'])
