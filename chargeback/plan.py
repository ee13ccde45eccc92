"""The Plan: identities, tiers, limits, auth rules and prices, read from the Kuadrant manifests a cluster applies."""
from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from .authorino import (
    AUTHORINO_LABEL,
    AuthRules,
    allowed,
    identity_attributes,
    read_auth_policy,
    secret_key,
    secret_object,
)
from .expressions import CelExpression, ExpressionError
from .manifests import Document, ManifestError, load_documents

_CHECKOUT_POLICY = Path(__file__).resolve().parent.parent / "deploy" / "kuadrant"
# The demo's manifests: those of this checkout (an editable install), else ./deploy/kuadrant.
DEFAULT_POLICY = str(_CHECKOUT_POLICY) if _CHECKOUT_POLICY.is_dir() else str(Path("deploy") / "kuadrant")
DEFAULT_NAMESPACE = "llm/vllm-httproute"  # Kuadrant's limitador_namespace for the demo's HTTPRoute
PRICES_LABEL = "chargeback.kuadrant.io/prices"
USER_ID_ANNOTATION = "secret.kuadrant.io/user-id"
GROUPS_ANNOTATION = "kuadrant.io/groups"
_DURATION = re.compile(r"(\d+)(ms|h|m|s)")
_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_window(text: str) -> float:
    """Seconds in a Gateway API duration such as `2m`, `1h30m`, `500ms`."""
    text = str(text).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 30s, 2m or 1h")
    return sum(int(number) * _SECONDS[unit] for number, unit in parts)


def mask_key(key: str) -> str:
    """A stable, non-reversible stand-in for an API key: `sha256:` and 12 hex digits."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Price:
    """What a tier pays: per authorized call, per 1000 tokens (total, input, output), and per model where the prices
    file names one (`models`: model -> its full price, the tier's units where the file names none)."""

    per_call: float = 0.0
    per_1k_tokens: float = 0.0
    per_1k_input_tokens: float = 0.0
    per_1k_output_tokens: float = 0.0
    models: tuple[tuple[str, Price], ...] = ()

    def cost(self, calls: int, tokens: int = 0, input_tokens: int = 0, output_tokens: int = 0) -> float:
        """Calls x per_call, plus total, input and output tokens at their prices per 1000."""
        return (calls * self.per_call + (tokens * self.per_1k_tokens + input_tokens * self.per_1k_input_tokens
                                         + output_tokens * self.per_1k_output_tokens) / 1000.0)

    def for_model(self, model: str) -> Price:
        """The price of one model: its own where the prices file names it, else the tier's."""
        return dict(self.models).get(model, self)

    def replace(self, **units: float) -> Price:
        """This price with `units` set, for the tier and every model alike."""
        return dataclasses.replace(self, **units, models=tuple((m, dataclasses.replace(p, **units))
                                                               for m, p in self.models))

    def to_dict(self) -> dict[str, Any]:
        return {**{unit: getattr(self, unit) for unit in PRICE_UNITS},
                "models": {model: {unit: getattr(p, unit) for unit in PRICE_UNITS} for model, p in self.models}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Price:
        """From `to_dict`, or a record of a version with per_call and per_1k_tokens only."""
        units = {unit: float(data.get(unit, 0.0)) for unit in PRICE_UNITS}
        return cls(**units, models=tuple((m, cls(**{u: float(p.get(u, 0.0)) for u in PRICE_UNITS}))
                                         for m, p in (data.get("models") or {}).items()))


PRICE_UNITS = ("per_call", "per_1k_tokens", "per_1k_input_tokens", "per_1k_output_tokens")


@dataclass(frozen=True)
class Rate:
    """One rate of a named limit: at most `limit` hits per `window` seconds."""

    limit_name: str
    limit: int
    window: float  # seconds

    @property
    def label(self) -> str:
        return f"{self.limit_name} ({self.limit} per {self.window:g} s)"


@dataclass(frozen=True)
class Limit:
    """One named limit of a RateLimitPolicy (requests) or TokenRateLimitPolicy (tokens)."""

    name: str
    policy: str
    kind: str  # "requests" or "tokens"
    rates: tuple[Rate, ...]
    predicates: tuple[CelExpression, ...]
    counters: tuple[CelExpression, ...]

    @property
    def per_request(self) -> bool:
        """True when a predicate or counter reads request attributes, so it cannot be decided per identity."""
        return any(e.per_request for e in self.predicates + self.counters)

    def applies(self, attributes: dict[str, Any]) -> bool:
        """All `when` predicates hold; raises ExpressionError when one cannot be evaluated."""
        return all(p.evaluate(attributes) is True for p in self.predicates)

    def counter_values(self, attributes: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(c.evaluate(attributes)) for c in self.counters)


@dataclass(frozen=True)
class Identity:
    """An API key and who it belongs to, as Authorino and the limits see it."""

    user: str
    key: str
    groups: tuple[str, ...]
    group_label: str  # the raw groups value, as metrics label it
    tier: str
    attributes: dict[str, Any]  # auth.identity as the limits see it
    known: bool  # Authorino would find the key (Secret indexed and selected by the AuthPolicy)
    allowed: bool  # the AuthPolicy's authorization rules pass
    source: str

    @property
    def masked_key(self) -> str:
        return mask_key(self.key)

    @property
    def auth(self) -> dict[str, Any]:
        """The CEL attributes this identity contributes: `auth.identity.*`."""
        return {"auth": {"identity": self.attributes}}


@dataclass(frozen=True)
class Tier:
    """A group with its members, the limits that apply to them and its prices."""

    name: str
    users: tuple[str, ...]
    limits: tuple[str, ...]
    price: Price


@dataclass(frozen=True)
class PolicyTarget:
    """Where a RateLimitPolicy (`kind` "requests") or TokenRateLimitPolicy ("tokens") attaches, and how its limits
    merge with the other policies on a route's way (`section` limits | defaults | overrides, `strategy` atomic |
    merge)."""

    policy: str  # <namespace>/<name>
    kind: str
    target_kind: str  # Gateway | HTTPRoute, or "" without a targetRef
    target: str  # <policy namespace>/<target name>
    section: str
    strategy: str


@dataclass
class Plan:
    identities: list[Identity]
    limits: list[Limit]
    tiers: dict[str, Tier]
    auth: AuthRules | None
    currency: str = "USD"
    telemetry_labels: dict[str, CelExpression] = field(default_factory=dict)
    response_labels: dict[str, str] = field(default_factory=dict)  # TelemetryPolicy label -> the response body's
    #                                                                JSON pointer it reads (on token metrics only)
    limitador_namespace: str | None = None
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    policy_targets: list[PolicyTarget] = field(default_factory=list)
    routes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # HTTPRoute ns/name -> its Gateways' ns/name

    def identity(self, user: str) -> Identity:
        found = self._by_user.get(user)
        if found is None:
            raise KeyError(f"no identity for user {user!r} in {', '.join(self.sources)}")
        return found

    @cached_property
    def _by_user(self) -> dict[str, Identity]:
        return {i.user: i for i in self.identities}

    def limits_for(self, identity: Identity) -> list[Limit]:
        """The limits whose predicates hold for this identity (per-request limits excluded)."""
        return [limit for limit in self.limits if not limit.per_request and _applies(limit, identity)]

    def counter_values(self, identity: Identity) -> dict[str, list[str]]:
        """limit name -> this identity's values of the limit's counter expressions (its counter's key)."""
        values = {}
        for limit in self.limits_for(identity):
            try:
                values[limit.name] = list(limit.counter_values(identity.auth))
            except ExpressionError:
                continue  # the Plan warned about it: Kuadrant skips a limit whose counter cannot be built
        return values

    def user_groups(self) -> dict[str, str]:
        """user -> tier: the fallback when a metric carries no group label."""
        return {i.user: i.tier for i in self.identities}


def _applies(limit: Limit, identity: Identity) -> bool:
    try:
        return limit.applies(identity.auth)
    except ExpressionError:
        return False


def load_plan(paths: Iterable[str | Path]) -> Plan:
    """Read every manifest under `paths` into a Plan; raises ManifestError with file and field on bad input."""
    paths = [str(p) for p in paths]
    documents = load_documents(paths)
    if not documents:
        raise ManifestError(f"{', '.join(paths)}: no Kubernetes manifests found")
    by_kind: dict[str, list[Document]] = {}
    for doc in documents:
        by_kind.setdefault(doc.kind, []).append(doc)
    warnings: list[str] = []
    auth_policies = [read_auth_policy(doc) for doc in by_kind.get("AuthPolicy", [])]
    auth = next((a for a in auth_policies if a is not None), None)
    limits = [limit for doc in by_kind.get("RateLimitPolicy", []) for limit in _read_limits(doc, "requests")]
    limits += [limit for doc in by_kind.get("TokenRateLimitPolicy", []) for limit in _read_limits(doc, "tokens")]
    prices, currency = _read_prices(by_kind.get("ConfigMap", []))
    identities = _read_identities(by_kind.get("Secret", []), auth, set(prices), warnings)
    _check_unique_keys(identities)
    _warn_unevaluable(limits, identities, warnings)
    routes = by_kind.get("HTTPRoute", [])
    return Plan(
        identities=identities,
        limits=limits,
        tiers=_tiers(identities, limits, prices),
        auth=auth,
        currency=currency,
        telemetry_labels=_read_telemetry(by_kind.get("TelemetryPolicy", []), warnings),
        response_labels=_response_labels(by_kind.get("TelemetryPolicy", [])),
        limitador_namespace=routes[0].name if len(routes) == 1 else None,
        warnings=warnings,
        sources=paths,
        policy_targets=[_read_target(doc, kind) for kind, policy in (("requests", "RateLimitPolicy"),
                                                                      ("tokens", "TokenRateLimitPolicy"))
                        for doc in by_kind.get(policy, [])],
        routes={route.name: _parent_gateways(route) for route in routes},
    )


def _read_target(doc: Document, kind: str) -> PolicyTarget:
    """The policy's targetRef (a Gateway or HTTPRoute of its own namespace) and its merge section and strategy."""
    spec = doc.data.get("spec") or {}
    ref = spec.get("targetRef")
    namespace = doc.name.split("/", 1)[0]
    section = next((s for s in ("defaults", "overrides") if spec.get(s)), "limits")
    strategy = (spec.get(section) or {}).get("strategy", "atomic") if section != "limits" else "atomic"
    if strategy not in ("atomic", "merge"):
        raise doc.error(f"spec.{section}.strategy", f"expected atomic or merge, got {strategy!r}")
    if ref is None:
        return PolicyTarget(doc.name, kind, "", "", section, strategy)
    if not isinstance(ref, dict) or ref.get("kind") not in ("Gateway", "HTTPRoute") or not ref.get("name"):
        raise doc.error("spec.targetRef", f"expected {{kind: Gateway | HTTPRoute, name: ...}}, got {ref!r}")
    return PolicyTarget(doc.name, kind, ref["kind"], f"{namespace}/{ref['name']}", section, strategy)


def _parent_gateways(route: Document) -> tuple[str, ...]:
    """The Gateways (ns/name) an HTTPRoute's parentRefs name; a parentRef's namespace defaults to the route's."""
    namespace = route.name.split("/", 1)[0]
    refs = (route.data.get("spec") or {}).get("parentRefs") or []
    if not isinstance(refs, list) or not all(isinstance(r, dict) and r.get("name") for r in refs):
        raise route.error("spec.parentRefs", "expected a list of {name: <Gateway>, namespace: ...}")
    return tuple(f"{r.get('namespace', namespace)}/{r['name']}" for r in refs if r.get("kind", "Gateway") == "Gateway")


def _read_limits(doc: Document, kind: str) -> list[Limit]:
    spec = doc.data.get("spec") or {}
    found: list[Limit] = []
    for section in ("limits", "defaults", "overrides"):
        limits = spec.get(section) or {}
        at = "spec.limits" if section == "limits" else f"spec.{section}.limits"
        if section != "limits":
            limits = limits.get("limits") or {}
        if not isinstance(limits, dict):
            raise doc.error(at, "expected a mapping of limit names")
        found += [_read_limit(doc, kind, f"{at}.{name}", name, body) for name, body in limits.items()]
    if not found:
        raise doc.error("spec.limits", "missing")
    return found


def _read_limit(doc: Document, kind: str, at: str, name: str, body: Any) -> Limit:
    if not isinstance(body, dict):
        raise doc.error(at, "expected a mapping with rates")
    rates = body.get("rates")
    if not isinstance(rates, list) or not rates:
        raise doc.error(f"{at}.rates", "expected a list of {limit, window}")
    parsed: list[Rate] = []
    for i, rate in enumerate(rates):
        limit = rate.get("limit") if isinstance(rate, dict) else None
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise doc.error(f"{at}.rates[{i}].limit", f"expected a whole number >= 0, got {limit!r}")
        try:
            parsed.append(Rate(name, limit, parse_window(rate.get("window", ""))))
        except ValueError as exc:
            raise doc.error(f"{at}.rates[{i}].window", str(exc)) from None
    return Limit(
        name=name,
        policy=doc.name,
        kind=kind,
        rates=tuple(parsed),
        predicates=tuple(_expressions(doc, f"{at}.when", body.get("when") or [], "predicate")),
        counters=tuple(_expressions(doc, f"{at}.counters", body.get("counters") or [], "expression")),
    )


def _expressions(doc: Document, at: str, items: Any, key: str) -> list[CelExpression]:
    if not isinstance(items, list):
        raise doc.error(at, f"expected a list of {{{key}: <CEL>}}")
    found = []
    for i, item in enumerate(items):
        source = item.get(key) if isinstance(item, dict) else None
        if not isinstance(source, str):
            raise doc.error(f"{at}[{i}].{key}", f"missing (kuadrant.io/v1 takes `{key}: <CEL>`)")
        try:
            found.append(CelExpression(source))
        except ExpressionError as exc:
            raise doc.error(f"{at}[{i}].{key}", str(exc)) from None
    return found


def _read_prices(config_maps: list[Document]) -> tuple[dict[str, Price], str]:
    """Prices from ConfigMaps labelled chargeback.kuadrant.io/prices: data `<tier>.<unit>` (a PRICE_UNITS name) and
    `<tier>.models`, a YAML mapping of model -> {unit: amount} (units it leaves out are the tier's)."""
    units: dict[str, dict[str, float]] = {}
    models: dict[str, dict[str, dict[str, float]]] = {}
    currency = "USD"
    for doc in config_maps:
        meta = doc.data.get("metadata") or {}
        if str((meta.get("labels") or {}).get(PRICES_LABEL, "")).lower() != "true":
            continue
        currency = str((meta.get("annotations") or {}).get("chargeback.kuadrant.io/currency", currency))
        for key, value in (doc.data.get("data") or {}).items():
            tier, _, unit = str(key).rpartition(".")
            if unit == "models" and tier:
                for model, entry in _model_prices(doc, f"data.{key}", value).items():
                    models.setdefault(tier, {}).setdefault(model, {}).update(entry)
            elif unit in PRICE_UNITS and tier:
                units.setdefault(tier, {})[unit] = _amount(doc, f"data.{key}", value)
            else:
                raise doc.error(f"data.{key}", f"expected keys <tier>.<unit> ({' | '.join(PRICE_UNITS)}) or "
                                               "<tier>.models")
    return {tier: Price(**units.get(tier, {}), models=tuple(
        (model, Price(**{**units.get(tier, {}), **entry})) for model, entry in models.get(tier, {}).items()))
        for tier in dict.fromkeys([*units, *models])}, currency


def _model_prices(doc: Document, at: str, value: Any) -> dict[str, dict[str, float]]:
    """A `<tier>.models` value: YAML `{model: {unit: amount}}`."""
    try:
        parsed = yaml.safe_load(value) if isinstance(value, str) else None
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(e, dict) for e in parsed.values()):
        raise doc.error(at, "expected a YAML mapping of model -> {unit: amount}, e.g. "
                            "'my-model: {per_1k_input_tokens: 0.001}'")
    found: dict[str, dict[str, float]] = {}
    for model, entry in parsed.items():
        for unit, amount in entry.items():
            if unit not in PRICE_UNITS:
                raise doc.error(f"{at}.{model}.{unit}", f"expected a unit, one of {', '.join(PRICE_UNITS)}")
            found.setdefault(str(model), {})[unit] = _amount(doc, f"{at}.{model}.{unit}", amount)
    return found


def _amount(doc: Document, at: str, value: Any) -> float:
    """A price >= 0; a one-line error naming the file and key otherwise."""
    try:
        amount = float(value)
    except (TypeError, ValueError):
        raise doc.error(at, f"expected a number, got {value!r}") from None
    if not amount >= 0:
        raise doc.error(at, f"expected a price >= 0, got {value!r}")
    return amount


def _read_identities(secrets: list[Document], auth: AuthRules | None, priced: set[str],
                     warnings: list[str]) -> list[Identity]:
    identities = []
    for doc in secrets:
        key = secret_key(doc)
        if key is None:
            continue
        meta = doc.data.get("metadata") or {}
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        annotations = meta.get("annotations") or {}
        indexed = labels.get(AUTHORINO_LABEL[0]) == AUTHORINO_LABEL[1]
        if not indexed:
            warnings.append(
                f"{doc.where('metadata.labels')}: lacks {AUTHORINO_LABEL[0]}: {AUTHORINO_LABEL[1]}; "
                "Authorino's default secret label selector will not index it, so the cluster answers 401 for its key"
            )
        secret = secret_object(doc, key)
        authorization_json = {"context": {}, "auth": {"identity": secret}}
        selected = auth is not None and all(labels.get(k) == v for k, v in auth.match_labels.items()) and (
            auth.namespace is None or auth.namespace == meta.get("namespace", "default"))
        attributes = identity_attributes(doc, auth, authorization_json) if auth else secret
        groups_value = attributes.get("groups", annotations.get(GROUPS_ANNOTATION, ""))
        group_label = ",".join(groups_value) if isinstance(groups_value, list) else str(groups_value or "")
        groups = tuple(g.strip() for g in group_label.split(",") if g.strip())
        user = str(attributes.get("userid") or annotations.get(USER_ID_ANNOTATION) or meta.get("name"))
        tier = attributes.get("tier")
        if not isinstance(tier, str) or not tier:
            tier = next((g for g in groups if g in priced), groups[0] if groups else "none")
        identities.append(Identity(
            user=user, key=key, groups=groups, group_label=group_label, tier=tier, attributes=attributes,
            known=indexed and selected,
            allowed=allowed(doc, auth, authorization_json),
            source=doc.where(),
        ))
    return identities


def _check_unique_keys(identities: list[Identity]) -> None:
    seen: dict[str, Identity] = {}
    for identity in identities:
        if identity.key in seen:
            raise ManifestError(f"{identity.source}: stringData.api_key: the same key as {seen[identity.key].source}")
        seen[identity.key] = identity


def _warn_unevaluable(limits: list[Limit], identities: list[Identity], warnings: list[str]) -> None:
    """One warning per limit whose predicates or counters cannot be evaluated for some identity."""
    for limit in limits:
        if limit.per_request:
            continue
        for identity in identities:
            try:
                if limit.applies(identity.auth):
                    limit.counter_values(identity.auth)
            except ExpressionError as exc:
                warnings.append(f"{limit.policy} limit {limit.name}: {exc} for user {identity.user}; "
                                "the limit does not apply")
                break


def _tiers(identities: list[Identity], limits: list[Limit], prices: dict[str, Price]) -> dict[str, Tier]:
    names = list(dict.fromkeys([i.tier for i in identities] + list(prices)))
    tiers = {}
    for name in names:
        members = [i for i in identities if i.tier == name]
        applying = [l.name for l in limits if any(_applies(l, i) for i in members)]
        tiers[name] = Tier(name, tuple(i.user for i in members), tuple(applying), prices.get(name, Price()))
    return tiers


_RESPONSE_BODY = re.compile(r"""responseBodyJSON\(\s*["'](/[^"']*)["']\s*\)""")


def _response_labels(policies: list[Document]) -> dict[str, str]:
    """TelemetryPolicy labels that read one field of the response body (`responseBodyJSON("/model")`): label ->
    JSON pointer. Limitador gets them with the Report after the answer, so only token metrics carry them."""
    found = {}
    for doc in policies:
        raw = ((doc.data.get("spec") or {}).get("metrics") or {}).get("default", {}).get("labels") or {}
        for name, source in raw.items():
            match = _RESPONSE_BODY.fullmatch(str(source).strip())
            if match:
                found[name] = match.group(1)
    return found


def _read_telemetry(policies: list[Document], warnings: list[str]) -> dict[str, CelExpression]:
    """Labels a TelemetryPolicy adds to Limitador's metrics; those the stand-in cannot evaluate are dropped with a
    warning."""
    labels: dict[str, CelExpression] = {}
    for doc in policies:
        raw = ((doc.data.get("spec") or {}).get("metrics") or {}).get("default", {}).get("labels") or {}
        for name, source in raw.items():
            try:
                expression = CelExpression(str(source))
            except ExpressionError as exc:
                raise doc.error(f"spec.metrics.default.labels.{name}", str(exc)) from None
            if expression.per_request:
                if _RESPONSE_BODY.fullmatch(expression.source.strip()):
                    continue  # the stand-in serves it on the token metrics (_response_labels)
                warnings.append(f"{doc.where(f'spec.metrics.default.labels.{name}')}: `{expression.source}` reads "
                                "request or response attributes; the stand-in leaves this label out")
                continue
            labels[name] = expression
    return labels
