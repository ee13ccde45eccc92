"""The Plan's policies compiled into Limitador limits per HTTPRoute as kuadrant-operator does, `chargeback limits`
(a limits file), and the diff against Limitador's `GET /limits/{ns}` (pure)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from test_plan import DEPLOY, limit_policy, write

from chargeback.cli import main
from chargeback.limits import expected_limits, limits_diff
from chargeback.manifests import ManifestError
from chargeback.plan import load_plan

USERID = 'descriptors[0]["auth.identity.userid"]'
NS = "llm/vllm-httproute"
DEMO = (("free-user-requests", 2, "limit.free_user_requests__b19516ff"),
        ("premium-user-requests", 10, "limit.premium_user_requests__3466dc78"),
        ("enterprise-user-requests", 50, "limit.enterprise_user_requests__23d1c320"))


def demo_file(namespace: str = NS) -> list[dict]:
    """The demo policy's limits as a Limitador limits file holds them (DOMAIN.md's identifiers)."""
    return [{"namespace": namespace, "max_value": limit, "seconds": 120, "name": name,
             "conditions": [f'descriptors[0]["{key}"] == "1"'], "variables": [USERID]} for name, limit, key in DEMO]


def route(name: str, gateway: str = "vllm-gateway", namespace: str = "llm") -> str:
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: llm}}\n"
            f"spec:\n  parentRefs: [{{name: {gateway}, namespace: {namespace}}}]\n")


def policy(name: str, target: str, limits: dict[str, int], section: str = "", strategy: str = "") -> str:
    """A RateLimitPolicy `name` on `target` (`Gateway/x` or `HTTPRoute/x`): each limit per user, `limit` per 1m."""
    kind, target_name = target.split("/")
    body = "".join(f"    {key}:\n      rates: [{{limit: {n}, window: 1m}}]\n"
                   "      counters: [{expression: auth.identity.userid}]\n" for key, n in limits.items())
    head = f"  {section}:\n" + (f"    strategy: {strategy}\n" if strategy else "") if section else ""
    indent = "  " if section else ""
    limits_block = "".join(indent + line + "\n" for line in ("  limits:\n" + body).splitlines())
    return (f"apiVersion: kuadrant.io/v1\nkind: RateLimitPolicy\nmetadata: {{name: {name}, namespace: llm}}\n"
            f"spec:\n  targetRef: {{group: gateway.networking.k8s.io, kind: {kind}, name: {target_name}}}\n"
            f"{head}{limits_block}")


def by_route(folder: Path, namespace: str = NS) -> dict[str, dict[str, tuple[int, str]]]:
    """namespace -> limit name -> (max_value, descriptor key) of the folder's compiled limits."""
    return {ns: {l["name"]: (l["max_value"], l["conditions"][0].split('"')[1]) for l in limits}
            for ns, limits in expected_limits(load_plan([folder]), namespace).items()}


def test_the_demo_policy_gives_domain_md_identifiers_in_the_route_namespace() -> None:
    compiled = expected_limits(load_plan([DEPLOY]), NS)
    assert {ns: [{k: v for k, v in l.items() if k != "id"} for l in limits] for ns, limits in compiled.items()} == {
        NS: demo_file()}


def test_chargeback_limits_prints_a_limits_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == demo_file()
    assert main(["limits", "--policy", str(DEPLOY), "--namespace", "llm/other-route"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == demo_file("llm/other-route")


def test_a_gateway_policy_gives_one_set_per_attached_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "rlp.yaml", (DEPLOY / "rate-limit-policy.yaml").read_text())
    write(tmp_path, "routes.yaml", "---\n".join([route("chat"), route("completions"), route("elsewhere", "other-gw")]))
    assert main(["limits", "--policy", str(tmp_path)]) == 0
    found = yaml.safe_load(capsys.readouterr().out)
    assert found == demo_file("llm/chat") + demo_file("llm/completions")  # not llm/elsewhere, not the default


def test_a_route_policy_gives_that_route_only_and_a_parent_in_another_namespace_counts(tmp_path: Path) -> None:
    write(tmp_path, "routes.yaml", "---\n".join([route("a"), route("b", "shared-gw", "infra")]))
    write(tmp_path, "rlp.yaml", policy("per-route", "HTTPRoute/a", {"small": 3}))
    assert by_route(tmp_path) == {"llm/a": {"small": (3, "limit.small__4005240b")}}
    write(tmp_path, "gw.yaml", policy("infra-wide", "Gateway/shared-gw", {"wide": 7}).replace(
        "namespace: llm}", "namespace: infra}", 1))
    assert by_route(tmp_path) == {"llm/a": {"small": (3, "limit.small__4005240b")},
                                  "llm/b": {"wide": (7, "limit.wide__ad6a009b")}}


@pytest.mark.parametrize(("section", "strategy", "expected"), [
    ("", "", {"shared": (1, "route-policy"), "route-only": (2, "route-policy")}),  # implicit atomic defaults
    ("defaults", "atomic", {"shared": (1, "route-policy"), "route-only": (2, "route-policy")}),
    ("defaults", "merge", {"shared": (1, "route-policy"), "route-only": (2, "route-policy"),
                           "gateway-only": (20, "gateway-policy")}),
    ("overrides", "atomic", {"shared": (10, "gateway-policy"), "gateway-only": (20, "gateway-policy")}),
    ("overrides", "merge", {"shared": (10, "gateway-policy"), "route-only": (2, "route-policy"),
                            "gateway-only": (20, "gateway-policy")}),
])
def test_gateway_and_route_policies_merge_by_the_gateway_policys_strategy(
        tmp_path: Path, section: str, strategy: str, expected: dict[str, tuple[int, str]]) -> None:
    write(tmp_path, "routes.yaml", "---\n".join([route("a"), route("b")]))
    write(tmp_path, "gw.yaml", policy("gateway-policy", "Gateway/vllm-gateway", {"shared": 10, "gateway-only": 20},
                                      section, strategy))
    write(tmp_path, "route.yaml", policy("route-policy", "HTTPRoute/a", {"shared": 1, "route-only": 2}))
    compiled = expected_limits(load_plan([tmp_path]), NS)
    assert {l["name"]: (l["max_value"], l["conditions"][0].split('"')[1].split("__")[1])
            for l in compiled["llm/a"]} == {  # each limit hashed with the policy it came from
        name: (n, hashlib.sha256(f"llm/{origin}/{name}".encode()).hexdigest()[:8]) for name, (n, origin) in expected.items()}
    assert {l["name"]: l["max_value"] for l in compiled["llm/b"]} == {"shared": 10, "gateway-only": 20}
    assert set(compiled) == {"llm/a", "llm/b"}


def test_token_limits_are_named_by_their_key_with_a_tokenlimit_descriptor(tmp_path: Path) -> None:
    write(tmp_path, "trlp.yaml", limit_policy("free-user-tokens", "[{limit: 100, window: 1m}, {limit: 9, window: 1500ms}]",
                                              kind="TokenRateLimitPolicy"))
    [minute, short] = expected_limits(load_plan([tmp_path]), NS)[NS]
    assert (minute["name"], minute["max_value"], minute["seconds"]) == ("free-user-tokens", 100, 60)
    assert (short["max_value"], short["seconds"]) == (9, 1)  # whole seconds, truncated
    assert minute["conditions"] == ['descriptors[0]["tokenlimit.free_user_tokens__3f2e6009"] == "1"']
    assert minute["variables"] == [USERID]


@pytest.mark.parametrize(("text", "message"), [
    (policy("p", "Gateway/g", {"x": 1}).replace("kind: Gateway", "kind: Service"),
     "rlp.yaml: RateLimitPolicy llm/p: spec.targetRef: expected {kind: Gateway | HTTPRoute, name: ...}, got "),
    (policy("p", "Gateway/g", {"x": 1}, "defaults", "sometimes"),
     "rlp.yaml: RateLimitPolicy llm/p: spec.defaults.strategy: expected atomic or merge, got 'sometimes'"),
    (policy("p", "Gateway/g", {"x": 1}) + "---\n" + route("r").replace("[{name: vllm-gateway", "[{nom: vllm-gateway"),
     "rlp.yaml: HTTPRoute llm/r: spec.parentRefs: expected a list of {name: <Gateway>, namespace: ...}"),
])
def test_bad_targets_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "rlp.yaml", text)
    with pytest.raises(ManifestError) as err:
        load_plan([path])
    assert str(err.value).startswith(f"{path}: " + message.removeprefix("rlp.yaml: "))


EXPECTED = [{**l, "id": None} for l in demo_file()]
WHERE = "GET /limits/llm%2Fvllm-httproute"
FREE = "limit free-user-requests (limit.free_user_requests__b19516ff, 2 per 120 s)"


def served(**changes: dict) -> list[dict]:
    """The demo's limits as Limitador lists them (another order, ids set), with `changes` by limit name."""
    return [{**l, "id": f"id-{i}", **changes.get(l["name"].split("-")[0], {})} for i, l in enumerate(reversed(EXPECTED))]


def test_the_same_limits_in_any_order_and_descriptor_form_match() -> None:
    assert limits_diff(EXPECTED, served(), NS) == []
    two = [{**EXPECTED[0], "variables": [USERID, 'descriptors[0]["request.path"]']}]
    assert limits_diff(two, [{**two[0], "variables": ["request.path", "descriptors[0].auth.identity.userid"]}], NS) == []
    other = {"namespace": NS, "max_value": 1, "seconds": 1, "name": "other", "variables": [],
             "conditions": ['descriptors[0]["limit.other__00000000"] == "1"']}
    assert limits_diff(EXPECTED, served() + [other], NS) == []  # another policy's limit is not ours to judge


@pytest.mark.parametrize(("found", "problem"), [
    ([l for l in served() if l["name"] != "free-user-requests"], f"{FREE} is missing from {WHERE}"),
    (served(free={"max_value": 5}), f"{FREE} has max_value 5 in {WHERE}, the policy says 2"),
    (served(free={"name": "free"}), f"{FREE} has name 'free' in {WHERE}, the policy says 'free-user-requests'"),
    (served(free={"seconds": 60}), f"{FREE} has seconds 60 in {WHERE}, the policy says 120"),
    (served(free={"variables": []}), f"{FREE} has variables [] in {WHERE}, the policy says [{USERID!r}]"),
    (served() + [{**EXPECTED[0], "seconds": 10, "max_value": 1}],
     f"{WHERE} has limit free-user-requests (limit.free_user_requests__b19516ff, 1 per 10 s), which the policy does "
     "not give"),
])
def test_each_difference_is_one_line_naming_the_limit(found: list[dict], problem: str) -> None:
    assert limits_diff(EXPECTED, found, NS) == [problem]


def test_the_cli_names_a_limitador_that_does_not_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["limits", "--limitador-url", "http://127.0.0.1:9"]) == 2
    assert capsys.readouterr().err == ("error: Limitador at http://127.0.0.1:9/limits/llm%2Fvllm-httproute: cannot "
                                       "read: ConnectionError\n")
