"""The Plan read from Kuadrant manifests: both predicate styles, groups, rates, Rego, prices, and each bad-input error."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from chargeback.manifests import ManifestError
from chargeback.plan import Price, Rate, load_plan, mask_key, parse_window
from chargeback.summary import PlanSummary

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kuadrant"
MANIFESTS = ROOT / "tests" / "manifests"  # the project's own manifests in the shapes of upstream ones (see each header)


def secret(user: str, groups: str, *, tier: str | None = None, managed: bool = True, name: str | None = None) -> str:
    label = "    authorino.kuadrant.io/managed-by: authorino\n" if managed else ""
    tier_annotation = f"    example.com/tier: {tier}\n" if tier else ""
    return (
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name or user}-apikey\n  namespace: llm\n"
        f"  labels:\n{label}    app: llm-gateway\n"
        f"  annotations:\n    kuadrant.io/groups: \"{groups}\"\n    secret.kuadrant.io/user-id: {user}\n{tier_annotation}"
        f"stringData:\n  api_key: {user}_key\n"
    )


FREE = 'auth.identity.groups.split(",").exists(g, g == "free")'


def limit_policy(limit: str, rates: str, predicate: str = FREE, kind: str = "RateLimitPolicy") -> str:
    """A one-limit policy counting per user; `rates` is a YAML flow list such as `[{limit: 2, window: 10s}]`."""
    version = "kuadrant.io/v1" if kind == "RateLimitPolicy" else "kuadrant.io/v1alpha1"
    return (f"apiVersion: {version}\nkind: {kind}\nmetadata: {{name: {limit}, namespace: llm}}\nspec:\n  limits:\n"
            f"    {limit}:\n      rates: {rates}\n      when: [{{predicate: '{predicate}'}}]\n"
            "      counters: [{expression: auth.identity.userid}]\n")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


TIER_AUTH = """\
apiVersion: kuadrant.io/v1
kind: AuthPolicy
metadata: {name: tier-auth, namespace: llm}
spec:
  rules:
    authentication:
      keys:
        apiKey: {allNamespaces: true, selector: {matchLabels: {app: llm-gateway}}}
        credentials: {authorizationHeader: {prefix: APIKEY}}
    response:
      success:
        filters:
          identity:
            json:
              properties:
                userid: {selector: auth.identity.metadata.annotations.secret\\.kuadrant\\.io/user-id}
                tier: {selector: auth.identity.metadata.annotations.example\\.com/tier}
"""


def test_default_manifests_give_the_demo_plan() -> None:
    plan = load_plan([DEPLOY])
    assert plan.warnings == []
    assert [(i.user, i.tier, i.known, i.allowed) for i in plan.identities] == [
        ("freeuser1", "free", True, True), ("freeuser2", "free", True, True),
        ("premiumuser1", "premium", True, True), ("premiumuser2", "premium", True, True),
        ("enterpriseuser1", "enterprise", True, True),
    ]
    assert {l.name: l.rates for l in plan.limits} == {
        "free-user-requests": (Rate("free-user-requests", 2, 120.0),),
        "premium-user-requests": (Rate("premium-user-requests", 10, 120.0),),
        "enterprise-user-requests": (Rate("enterprise-user-requests", 50, 120.0),),
    }
    assert plan.auth is not None and (plan.auth.header, plan.auth.prefix) == ("authorization", "APIKEY")
    assert plan.tiers["premium"].users == ("premiumuser1", "premiumuser2")
    assert plan.tiers["premium"].limits == ("premium-user-requests",)
    assert plan.tiers["free"].price == Price(per_call=0.001, per_1k_tokens=0.0005)
    assert plan.tiers["enterprise"].price.cost(calls=10, tokens=2000) == pytest.approx(0.054)
    assert [l.name for l in plan.limits_for(plan.identity("freeuser1"))] == ["free-user-requests"]
    assert plan.identity("premiumuser1").attributes == {"userid": "premiumuser1", "groups": "premium"}
    assert plan.limits[0].counter_values(plan.identity("freeuser2").auth) == ("freeuser2",)
    assert plan.user_groups()["enterpriseuser1"] == "enterprise"


def test_plan_summary_masks_keys_and_reads_back_the_same() -> None:
    summary = PlanSummary.of(load_plan([DEPLOY]))
    text = repr(summary.to_dict())
    assert "_key'" not in text and "freeuser1_key" not in text
    assert summary.identities[0].key == mask_key("freeuser1_key")
    assert PlanSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary
    assert summary.rates_of("freeuser1") == ([Rate("free-user-requests", 2, 120.0)], False)
    assert mask_key("freeuser1_key").startswith("sha256:") and len(mask_key("x")) == 19


def test_upstream_shaped_manifests_read_unchanged_with_a_401_warning_per_unlabelled_secret() -> None:
    plan = load_plan([MANIFESTS])
    users = [i.user for i in plan.identities]
    assert users == ["freeuser1", "freeuser2", "premiumuser1", "premiumuser2", "enterpriseuser1"]
    assert all(not i.known and i.allowed for i in plan.identities)
    unlabelled = [w for w in plan.warnings if "authorino.kuadrant.io/managed-by" in w]
    assert len(unlabelled) == 5
    assert unlabelled[0] == (
        f"{MANIFESTS / 'chargeback-policy.yaml'}: Secret llm/freeuser1-apikey: metadata.labels: lacks "
        "authorino.kuadrant.io/managed-by: authorino; Authorino's default secret label selector will not index it, "
        "so the cluster answers 401 for its key"
    )
    kinds = {(l.policy, l.kind) for l in plan.limits}
    assert kinds == {("openshift-ingress/gateway-rate-limits", "requests"), ("llm/chargeback-limits", "requests"),
                     ("openshift-ingress/gateway-token-rate-limits", "tokens")}
    assert set(plan.telemetry_labels) == {"tier", "user"}  # model reads the response body: token metrics only
    assert plan.response_labels == {"model": "/model"} and not any("labels.model" in w for w in plan.warnings)


def plan_facts(folder: Path) -> tuple:
    """What a folder's Plan says, file paths left out of its warnings: identities, limits, tiers, labels, warnings."""
    plan = load_plan([folder])
    return ([(i.user, i.tier, i.groups, i.known, i.allowed) for i in plan.identities],
            sorted((l.policy, l.name, l.kind, l.rates) for l in plan.limits),
            {name: (t.users, t.limits, t.price) for name, t in plan.tiers.items()},
            sorted(plan.telemetry_labels),
            sorted(re.sub(r"^\S+\.ya?ml: ", "", w) for w in plan.warnings))


def test_upstream_reference_manifests_load() -> None:
    """The real upstream files, read as they are, say what the project's own copies in tests/manifests/ say."""
    upstream = ROOT.parent / "shared" / "reference"  # beside a development checkout only
    if not upstream.is_dir():
        pytest.skip(f"the upstream reference manifests are not beside this checkout ({upstream} is absent)")
    assert plan_facts(upstream) == plan_facts(MANIFESTS)


def test_tier_predicate_style(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("alice", "x", tier="free") + "---\n" + secret("bob", "y", tier="premium"))
    write(tmp_path, "auth.yaml", TIER_AUTH)
    plan = load_plan([tmp_path, MANIFESTS / "rate-limit-policy.yaml"])
    assert [l.name for l in plan.limits_for(plan.identity("alice"))] == ["free"]
    assert [l.name for l in plan.limits_for(plan.identity("bob"))] == ["premium"]
    assert plan.identity("bob").tier == "premium"
    assert plan.tiers["free"].limits == ("free",)


def test_user_in_several_groups_matches_several_limits(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("carol", "free,premium"))
    plan = load_plan([tmp_path, DEPLOY / "auth-policy.yaml", DEPLOY / "rate-limit-policy.yaml", DEPLOY / "prices.yaml"])
    carol = plan.identity("carol")
    assert carol.groups == ("free", "premium") and carol.group_label == "free,premium"
    assert carol.tier == "free"
    assert [l.name for l in plan.limits_for(carol)] == ["free-user-requests", "premium-user-requests"]


def test_disallowed_group_is_decided_by_the_rego_rule(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("dave", "gold") + "---\n" + secret("erin", "gold,enterprise"))
    plan = load_plan([tmp_path, DEPLOY / "auth-policy.yaml"])
    assert plan.identity("dave").allowed is False
    assert plan.identity("erin").allowed is True


def test_pattern_matching_authorization(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("fay", "free") + "---\n" + secret("gus", "gold"))
    write(tmp_path, "auth.yaml", TIER_AUTH + """\
    authorization:
      only-free:
        patternMatching:
          patterns:
            - selector: auth.identity.metadata.annotations.kuadrant\\.io/groups
              operator: eq
              value: free
""")
    plan = load_plan([tmp_path])
    assert (plan.identity("fay").allowed, plan.identity("gus").allowed) == (True, False)


def test_several_rates_on_one_limit_and_token_limits(tmp_path: Path) -> None:
    write(tmp_path, "rlp.yaml", limit_policy("free-burst", "[{limit: 2, window: 10s}, {limit: 5, window: 1h30m}]"))
    plan = load_plan([tmp_path, MANIFESTS / "token-limit-policy.yaml"])
    assert plan.limits[0].rates == (Rate(plan.limits[0].name, 2, 10.0), Rate(plan.limits[0].name, 5, 5400.0))
    assert [(l.name, l.kind, l.rates) for l in plan.limits[1:2]] == [("free-user-tokens", "tokens", (Rate("free-user-tokens", 100, 60.0),))]


def test_unrelated_kinds_and_empty_documents_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "mixed.yaml", "---\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\n"
          + secret("hal", "free"))
    plan = load_plan([tmp_path])
    assert [i.user for i in plan.identities] == ["hal"] and plan.limits == [] and plan.auth is None


def test_windows() -> None:
    assert [parse_window(w) for w in ("2m", "30s", "1h", "500ms", "1h30m")] == [120, 30, 3600, 0.5, 5400]
    with pytest.raises(ValueError, match="'2 minutes' is not a duration like 30s, 2m or 1h"):
        parse_window("2 minutes")


RLP = """\
apiVersion: kuadrant.io/v1
kind: RateLimitPolicy
metadata: {{name: bad, namespace: llm}}
spec:
  limits:
    free:
      rates: [{{limit: {limit}, window: {window}}}]
      when: [{{predicate: '{predicate}'}}]
      counters: [{{expression: auth.identity.userid}}]
"""


def good_rlp(**overrides: str) -> str:
    values = {"limit": "2", "window": "2m", "predicate": 'auth.identity.tier == "free"', **overrides}
    return RLP.format(**values)


@pytest.mark.parametrize("text, message", [
    (good_rlp(window="2 minutes"),
     "{f}: RateLimitPolicy llm/bad: spec.limits.free.rates[0].window: '2 minutes' is not a duration like 30s, 2m or 1h"),
    (good_rlp(limit="two"),
     "{f}: RateLimitPolicy llm/bad: spec.limits.free.rates[0].limit: expected a whole number >= 0, got 'two'"),
    (good_rlp(predicate="auth.identity.tier =="),
     "{f}: RateLimitPolicy llm/bad: spec.limits.free.when[0].predicate: CEL syntax error in `auth.identity.tier ==`"),
    ("apiVersion: kuadrant.io/v1\nkind: RateLimitPolicy\nmetadata: {name: bad, namespace: llm}\nspec:\n  limits: [a]\n",
     "{f}: RateLimitPolicy llm/bad: spec.limits: expected a mapping of limit names"),
    ("apiVersion: kuadrant.io/v1\nkind: RateLimitPolicy\nmetadata: {name: bad, namespace: llm}\nspec:\n"
     "  limits:\n    free:\n      rates: [{limit: 1, window: 1m}]\n      when: [{selector: a, operator: eq, value: b}]\n",
     "{f}: RateLimitPolicy llm/bad: spec.limits.free.when[0].predicate: missing (kuadrant.io/v1 takes `predicate: <CEL>`)"),
    ("kind: Secret\nmetadata: {name: s, namespace: llm}\ndata: {api_key: '***'}\n",
     "{f}: Secret llm/s: data.api_key: not valid base64"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  namespace: llm\n  labels: {chargeback.kuadrant.io/prices: 'true'}\n"
     "data: {free.per_call: cheap}\n",
     "{f}: ConfigMap llm/p: data.free.per_call: expected a number, got 'cheap'"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: p\n  namespace: llm\n  labels: {chargeback.kuadrant.io/prices: 'true'}\n"
     "data: {free.per_month: '1'}\n",
     "{f}: ConfigMap llm/p: data.free.per_month: expected keys <tier>.<unit> (per_call | per_1k_tokens | "
     "per_1k_input_tokens | per_1k_output_tokens) or <tier>.models"),
    ("apiVersion: kuadrant.io/v1\nkind: AuthPolicy\nmetadata: {name: a, namespace: llm}\nspec:\n  rules:\n"
     "    authentication:\n      k:\n        apiKey: {selector: {matchLabels: {app: x}}}\n        credentials: {cookie: {name: c}}\n",
     "{f}: AuthPolicy llm/a: spec.rules.authentication.k.credentials: only authorizationHeader and customHeader are "
     "supported, got ['cookie']"),
    ("apiVersion: kuadrant.io/v1\nkind: AuthPolicy\nmetadata: {name: a, namespace: llm}\nspec:\n  rules:\n"
     "    authentication:\n      k:\n        apiKey: {selector: {matchLabels: {app: x}}}\n"
     "    authorization:\n      r:\n        opa:\n          rego: 'allow { groups[_] == '\n",
     "{f}: AuthPolicy llm/a: spec.rules.authorization.r.opa.rego: Rego error: this is unclosed"),
    ("- just\n- a list\n", "{f}: document 1: expected a mapping with apiVersion and kind"),
    ("kind: Secret\nmetadata: {name: s\n", "{f}:3:1: YAML error: " + (  # libyaml's words, or PyYAML's own
        "did not find expected ',' or '}'" if yaml.__with_libyaml__ else "expected ',' or '}', but got '<stream end>'")),
])
def test_malformed_input_names_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ManifestError) as caught:
        load_plan([path])
    assert str(caught.value).startswith(message.replace("{f}", str(path)))
    assert "\n" not in str(caught.value)


def test_missing_file_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"^/nonexistent/policy\.yaml: no such file or folder$"):
        load_plan(["/nonexistent/policy.yaml"])
    with pytest.raises(ManifestError, match=f"^{tmp_path}: no Kubernetes manifests found$"):
        load_plan([tmp_path])


def test_duplicate_api_key_is_rejected(tmp_path: Path) -> None:
    write(tmp_path, "keys.yaml", secret("ivan", "free") + "---\n" + secret("ivan", "premium", name="other"))
    with pytest.raises(ManifestError, match=r"Secret llm/other-apikey: stringData.api_key: the same key as .*ivan-apikey"):
        load_plan([tmp_path])
