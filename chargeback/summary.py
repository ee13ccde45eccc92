"""PlanSummary: what a run record keeps of the Plan (API keys masked), written by the run and read by the checks
and the report. The same typed object on both sides; in record.json it is the `plan` field."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .plan import Plan, Price, Rate


@dataclass(frozen=True)
class IdentitySummary:
    user: str
    key: str  # masked: sha256:<12 hex digits>
    groups: tuple[str, ...]
    group_label: str  # the raw groups value, as metrics label it
    tier: str
    known: bool  # Authorino would find the key
    allowed: bool  # the AuthPolicy's authorization rules pass
    limits: tuple[str, ...]  # the limits that apply to the identity
    counter_values: dict[str, list[str]]  # limit name -> the identity's values of the limit's counters

    @property
    def valid(self) -> bool:
        """Its requests should reach the limiter."""
        return self.known and self.allowed

    @property
    def allowed_groups(self) -> set[str]:
        """The group labels a series of this identity may carry: the raw groups value, or one of its groups."""
        return {self.group_label or ",".join(self.groups), *self.groups, self.tier} - {""}


@dataclass(frozen=True)
class LimitSummary:
    name: str
    policy: str
    kind: str  # "requests" or "tokens"
    rates: tuple[Rate, ...]
    when: tuple[str, ...]  # CEL predicates
    counters: tuple[str, ...]  # CEL counter expressions


@dataclass(frozen=True)
class TierSummary:
    users: tuple[str, ...]
    limits: tuple[str, ...]
    price: Price


@dataclass(frozen=True)
class PlanSummary:
    sources: tuple[str, ...]
    currency: str
    identities: tuple[IdentitySummary, ...]
    limits: tuple[LimitSummary, ...]
    tiers: dict[str, TierSummary]
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, plan: Plan) -> PlanSummary:
        return cls(
            sources=tuple(plan.sources), currency=plan.currency,
            identities=tuple(IdentitySummary(
                i.user, i.masked_key, i.groups, i.group_label, i.tier, i.known, i.allowed,
                tuple(l.name for l in plan.limits_for(i)), plan.counter_values(i)) for i in plan.identities),
            limits=tuple(LimitSummary(l.name, l.policy, l.kind, l.rates, tuple(p.source for p in l.predicates),
                                      tuple(c.source for c in l.counters)) for l in plan.limits),
            tiers={t.name: TierSummary(t.users, t.limits, t.price) for t in plan.tiers.values()},
            warnings=tuple(plan.warnings))

    def identity(self, user: str) -> IdentitySummary | None:
        return self._by_user.get(user)

    @cached_property
    def _by_user(self) -> dict[str, IdentitySummary]:
        return {i.user: i for i in self.identities}

    def rates_of(self, user: str) -> tuple[list[Rate], bool]:
        """The request-limit rates that apply to a user, and whether a token limit applies too."""
        identity = self.identity(user)
        applying = [l for l in self.limits if identity is not None and l.name in identity.limits]
        return [r for l in applying if l.kind == "requests" for r in l.rates], any(l.kind == "tokens" for l in applying)

    @cached_property
    def counter_sources(self) -> dict[str, list[str]]:
        """Limit name -> its counter expressions (the variables `/counters` lists a counter by)."""
        return {l.name: list(l.counters) for l in self.limits}

    def token_rates_of(self, user: str) -> list[Rate]:
        """The token-limit rates that apply to a user."""
        identity = self.identity(user)
        return [r for l in self.limits if identity is not None and l.name in identity.limits and l.kind == "tokens"
                for r in l.rates]

    def shared_counters(self) -> dict[str, str]:
        """user -> another user with whom it shares a counter (the window model follows one identity at a time)."""
        owners: dict[tuple, str] = {}
        shared: dict[str, str] = {}
        for identity in self.identities:
            for limit, values in identity.counter_values.items():
                other = owners.setdefault((limit, tuple(values)), identity.user)
                if other != identity.user:
                    shared[identity.user], shared[other] = other, identity.user
        return shared

    @property
    def digest(self) -> str:
        """A hash of the summary: two processes that loaded the same Plan have the same digest."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (record.json's `plan`)."""
        return {
            "sources": list(self.sources),
            "currency": self.currency,
            "identities": [
                {"user": i.user, "key": i.key, "groups": list(i.groups), "group_label": i.group_label,
                 "tier": i.tier, "known": i.known, "allowed": i.allowed, "limits": list(i.limits),
                 "counter_values": i.counter_values}
                for i in self.identities
            ],
            "limits": [
                {"name": l.name, "policy": l.policy, "kind": l.kind,
                 "rates": [{"limit": r.limit, "window_seconds": r.window} for r in l.rates],
                 "when": list(l.when), "counters": list(l.counters)}
                for l in self.limits
            ],
            "tiers": {
                name: {"users": list(t.users), "limits": list(t.limits),
                       "price": t.price.to_dict()}
                for name, t in self.tiers.items()
            },
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanSummary:
        """Read the JSON form back; a KeyError or TypeError for a malformed one (the record reader names the file)."""
        return cls(
            sources=tuple(data["sources"]), currency=data.get("currency", "USD"),
            identities=tuple(IdentitySummary(
                i["user"], i["key"], tuple(i["groups"]), i.get("group_label") or ",".join(i["groups"]), i["tier"],
                i["known"], i["allowed"], tuple(i["limits"]), dict(i.get("counter_values") or {}))
                for i in data["identities"]),
            limits=tuple(LimitSummary(
                l["name"], l["policy"], l["kind"], tuple(Rate(l["name"], r["limit"], r["window_seconds"])
                                                         for r in l["rates"]),
                tuple(l["when"]), tuple(l["counters"])) for l in data["limits"]),
            tiers={name: TierSummary(tuple(t["users"]), tuple(t["limits"]), Price.from_dict(t["price"]))
                   for name, t in data["tiers"].items()},
            warnings=tuple(data.get("warnings", ())))
