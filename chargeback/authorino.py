"""Authorino's side of the Plan: which Secrets are API keys, where the key is read, what `auth.identity` holds
for the limits, and whether the AuthPolicy's authorization rules (OPA Rego, patternMatching) allow an identity."""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Protocol

from .expressions import CelExpression, ExpressionError, RegoRule, resolve_selector
from .manifests import Document, ManifestError

AUTHORINO_LABEL = ("authorino.kuadrant.io/managed-by", "authorino")  # Authorino's default secret label selector


class AuthorizationRule(Protocol):
    def allows(self, authorization_json: dict[str, Any]) -> bool: ...


_OPERATORS = {
    "eq": lambda actual, value: str(actual) == value,
    "neq": lambda actual, value: str(actual) != value,
    "incl": lambda actual, value: isinstance(actual, list) and value in actual,
    "excl": lambda actual, value: isinstance(actual, list) and value not in actual,
    "matches": lambda actual, value: re.search(value, str(actual)) is not None,
}


@dataclass(frozen=True)
class PatternRule:
    """Authorino `patternMatching`: every pattern (selector, operator, value) must hold."""

    patterns: tuple[tuple[str, str, str], ...]

    def allows(self, authorization_json: dict[str, Any]) -> bool:
        return all(
            _OPERATORS[op](resolve_selector(selector, authorization_json), value)
            for selector, op, value in self.patterns
        )


@dataclass(frozen=True)
class AuthRules:
    """What the AuthPolicy does: where the key is read, which Secrets count, what auth.identity holds, who is
    allowed."""

    policy: str
    header: str  # lower-case header name
    prefix: str  # e.g. "APIKEY"; "" for a bare key
    match_labels: dict[str, str]
    namespace: str | None  # None when allNamespaces
    identity_properties: dict[str, Any] | None  # name -> {"selector"|"value"|"expression": ...}; None: the Secret
    rules: tuple[AuthorizationRule, ...]

    def header_value(self, key: str) -> str:
        return f"{self.prefix} {key}" if self.prefix else key


def read_auth_policy(doc: Document) -> AuthRules | None:
    """The API-key part of an AuthPolicy (kuadrant.io/v1); None when it authenticates by other means."""
    spec = doc.data.get("spec") or {}
    rules = spec.get("rules") or (spec.get("defaults") or {}).get("rules") or {}
    authentication = rules.get("authentication") or {}
    if not isinstance(authentication, dict):
        raise doc.error("spec.rules.authentication", "expected a mapping of authentication names")
    api_key = next(((n, a) for n, a in authentication.items() if isinstance(a, dict) and "apiKey" in a), None)
    if api_key is None:
        return None
    name, method = api_key
    at = f"spec.rules.authentication.{name}"
    selector = (method["apiKey"] or {}).get("selector") or {}
    match_labels = selector.get("matchLabels") or {}
    if not isinstance(match_labels, dict):
        raise doc.error(f"{at}.apiKey.selector.matchLabels", "expected a mapping of labels")
    header, prefix = _credentials(doc, at, method.get("credentials") or {})
    meta = doc.data.get("metadata") or {}
    return AuthRules(
        policy=doc.name,
        header=header,
        prefix=prefix,
        match_labels={str(k): str(v) for k, v in match_labels.items()},
        namespace=None if method["apiKey"].get("allNamespaces") else meta.get("namespace", "default"),
        identity_properties=_identity_properties(doc, rules),
        rules=_authorization_rules(doc, rules),
    )


def _credentials(doc: Document, at: str, credentials: dict[str, Any]) -> tuple[str, str]:
    if not credentials or "authorizationHeader" in credentials:
        prefix = (credentials.get("authorizationHeader") or {}).get("prefix", "Bearer")  # Authorino's default
        return "authorization", str(prefix)
    if "customHeader" in credentials:
        header = (credentials["customHeader"] or {}).get("name")
        if not header:
            raise doc.error(f"{at}.credentials.customHeader.name", "missing")
        return str(header).lower(), ""
    raise doc.error(f"{at}.credentials",
                    f"only authorizationHeader and customHeader are supported, got {sorted(credentials)}")


def _identity_properties(doc: Document, rules: dict[str, Any]) -> dict[str, Any] | None:
    """The `identity` success filter (`auth.identity.*` in limits); None when the policy defines none."""
    success = (rules.get("response") or {}).get("success") or {}
    filters = success.get("filters") or success.get("dynamicMetadata") or {}
    identity = filters.get("identity")
    if identity is None:
        return None
    properties = (identity.get("json") or {}).get("properties")
    if not isinstance(properties, dict):
        raise doc.error("spec.rules.response.success.filters.identity.json.properties", "expected a mapping")
    for name, prop in properties.items():
        if not isinstance(prop, dict) or not {"selector", "value", "expression"} & set(prop):
            raise doc.error(f"spec.rules.response.success.filters.identity.json.properties.{name}",
                            "expected selector, value or expression")
    return properties


def _authorization_rules(doc: Document, rules: dict[str, Any]) -> tuple[AuthorizationRule, ...]:
    found: list[AuthorizationRule] = []
    for name, rule in (rules.get("authorization") or {}).items():
        at = f"spec.rules.authorization.{name}"
        if "opa" in rule:
            rego = (rule["opa"] or {}).get("rego")
            if not isinstance(rego, str):
                raise doc.error(f"{at}.opa.rego", "only inline Rego is supported")
            try:
                found.append(RegoRule(rego))
            except ExpressionError as exc:
                raise doc.error(f"{at}.opa.rego", str(exc)) from None
        elif "patternMatching" in rule:
            patterns = (rule["patternMatching"] or {}).get("patterns") or []
            try:
                found.append(PatternRule(tuple((p["selector"], p["operator"], str(p["value"])) for p in patterns)))
            except (KeyError, TypeError):
                raise doc.error(f"{at}.patternMatching.patterns",
                                "expected a list of {selector, operator, value}") from None
            unknown = {p["operator"] for p in patterns} - set(_OPERATORS)
            if unknown:
                raise doc.error(f"{at}.patternMatching.patterns", f"unsupported operator {sorted(unknown)}")
        else:
            raise doc.error(at, f"only opa and patternMatching rules are supported, got {sorted(rule)}")
    return tuple(found)


def secret_key(doc: Document) -> str | None:
    if "api_key" in (doc.data.get("stringData") or {}):
        return str(doc.data["stringData"]["api_key"])
    encoded = (doc.data.get("data") or {}).get("api_key")
    if encoded is None:
        return None
    try:
        return base64.b64decode(str(encoded), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise doc.error("data.api_key", "not valid base64") from None


def secret_object(doc: Document, key: str) -> dict[str, Any]:
    """The Secret as Authorino hands it to rules: data base64-encoded, stringData folded in."""
    data = dict(doc.data.get("data") or {})
    data["api_key"] = base64.b64encode(key.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "metadata": doc.data.get("metadata") or {}, "data": data}


def identity_attributes(doc: Document, auth: AuthRules, authorization_json: dict[str, Any]) -> dict[str, Any]:
    if auth.identity_properties is None:
        return authorization_json["auth"]["identity"]
    attributes = {}
    for name, prop in auth.identity_properties.items():
        if "value" in prop:
            attributes[name] = prop["value"]
        elif "selector" in prop:
            attributes[name] = resolve_selector(str(prop["selector"]), authorization_json)
        else:
            try:
                attributes[name] = CelExpression(str(prop["expression"])).evaluate(authorization_json)
            except ExpressionError as exc:
                raise ManifestError(f"{auth.policy}: identity property {name}: {exc} (for {doc.where()})") from None
    return attributes


def allowed(doc: Document, auth: AuthRules | None, authorization_json: dict[str, Any]) -> bool:
    if auth is None:
        return True
    try:
        return all(rule.allows(authorization_json) for rule in auth.rules)
    except ExpressionError as exc:
        raise ManifestError(f"AuthPolicy {auth.policy}: authorization failed for {doc.where()}: {exc}") from None
