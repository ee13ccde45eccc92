"""What a scenario is: streams of simulated users (who, how paced, how much), and the slots they make under a
Plan; tiers are named or given by role, ranked by their limits."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from chargeback.plan import Plan

from .patterns import BackToBack, Pattern

INVALID_CLASS = "(invalid key)"  # the user class of slots without a valid key
MISSING, UNKNOWN = "(missing key)", "(unknown key)"  # their ledger accounts
LOCUST_CONTROLS = ""  # the scenario name that means none: Locust's users, spawn rate and run time drive the tiers
CREDENTIALS = ("valid", "missing", "unknown", "disallowed")
ENDPOINTS = {"completions": "/v1/completions", "chat": "/v1/chat/completions"}
# Tier roles: sets of the Plan's tiers (those with valid identities), ranked by their most restrictive request rate
ROLES = {
    "every-tier": "every tier",
    "lowest-limit": "the tier with the lowest limit",
    "second-lowest-limit": "the tier with the second-lowest limit",
    "highest-limit": "the tier with the highest limit",
    "above-lowest-limit": "every tier but the one with the lowest limit",
}


@dataclass(frozen=True)
class Stream:
    """What some simulated users do: who they are, how they pace, how many requests they send."""

    users: tuple[str, ...] = ()  # named identities
    tiers: tuple[str, ...] = ()  # every identity of these tiers (names or ROLES)
    pick: tuple[int, ...] = ()  # only these identities of the tiers, by position (0: the first); () all
    credential: str = "valid"  # valid | missing | unknown | disallowed
    per_identity: int = 1  # concurrent simulated users sharing one identity
    pattern: Pattern = BackToBack()
    requests: int | None = None  # per round; None: until the scenario's duration ends
    rounds: int = 1
    round_gap: float = 0.0  # idle seconds between rounds
    endpoint: str = "completions"  # completions | chat
    stream: bool = False
    model: str = "Qwen/Qwen3-0.6B"
    prompt: str = "Hello from the load test"
    max_tokens: int = 16

    @property
    def budget(self) -> int | None:
        return None if self.requests is None else self.requests * self.rounds

    @property
    def path(self) -> str:
        return ENDPOINTS[self.endpoint]


@dataclass(frozen=True)
class Slot:
    """One simulated user: its user class (a tier), identity and stream."""

    index: int
    user_class: str
    account: str  # the identity's user name, or MISSING / UNKNOWN
    stream: Stream


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    streams: tuple[Stream, ...]
    duration: float | None = None  # seconds; None: until every budget is spent
    source: str = "built-in"  # the file that declared it

    def slots(self, plan: Plan) -> list[Slot]:
        """The simulated users, identities spread evenly; a one-line ValueError for a name the Plan lacks, or when
        no identity of the Plan matches any stream."""
        slots: list[Slot] = []
        for stream in self.streams:
            for user_class, account in self._accounts(stream, plan):
                slots.append(Slot(len(slots), user_class, account, stream))
        if not slots:
            raise ValueError(f"scenario {self.name} sends nothing under the Plan ({', '.join(plan.sources)}): "
                             "no identity matches its streams")
        return slots

    def scaled(self, duration: float | None = None, per_identity: int | None = None) -> Scenario:
        """This scenario with another duration (if it has one) and simulated users per identity."""
        streams = self.streams if per_identity is None else tuple(
            replace(s, per_identity=per_identity) for s in self.streams)
        return replace(self, streams=streams,
                       duration=duration if duration is not None and self.duration is not None else self.duration)

    def _accounts(self, stream: Stream, plan: Plan) -> list[tuple[str, str]]:
        if stream.credential in ("missing", "unknown"):
            return [(INVALID_CLASS, MISSING if stream.credential == "missing" else UNKNOWN)] * stream.per_identity
        if stream.credential == "disallowed":
            identities = [i for i in plan.identities if i.known and not i.allowed]
        else:
            for user in stream.users:
                if user not in {i.user for i in plan.identities}:
                    raise ValueError(f"scenario {self.name} names user {user}, which the Plan "
                                     f"({', '.join(plan.sources)}) does not have")
            tiers = set()
            for tier in stream.tiers:
                if tier not in plan.tiers and tier not in ROLES:
                    raise ValueError(f"scenario {self.name} names tier {tier}, which the Plan "
                                     f"({', '.join(plan.sources)}) does not have; tiers: {', '.join(plan.tiers)}")
                tiers.update(tier_role(plan, tier))
            valid = [i for i in plan.identities if i.known and i.allowed]
            identities = [i for i in valid if i.user in stream.users]
            for tier in [t for t in plan.tiers if t in tiers]:
                members = [i for i in valid if i.tier == tier]
                identities += [members[p] for p in stream.pick if p < len(members)] if stream.pick else members
        return [(i.tier, i.user) for _ in range(stream.per_identity) for i in identities]


def valid_tiers(plan: Plan) -> list[str]:
    """The Plan's tiers that have identities the gateway lets through, most restrictive request rate first (a tier
    without request limits last; ties in the Plan's order)."""
    limits = {limit.name: limit for limit in plan.limits}
    tiers = [t for t in plan.tiers.values() if any(i.tier == t.name and i.known and i.allowed
                                                    for i in plan.identities)]

    def rate(tier: str) -> float:
        rates = [r.limit / r.window for name in plan.tiers[tier].limits if name in limits
                 and limits[name].kind == "requests" for r in limits[name].rates]
        return min(rates, default=float("inf"))
    return sorted((t.name for t in tiers), key=rate)


def tier_role(plan: Plan, name: str) -> list[str]:
    """The tiers a tier name or role stands for."""
    ranked = valid_tiers(plan)
    roles = {"every-tier": ranked, "lowest-limit": ranked[:1], "second-lowest-limit": ranked[1:2],
             "highest-limit": ranked[-1:], "above-lowest-limit": ranked[1:]}
    return roles.get(name, [name])


def tier_weights(text: str, tiers: list[str]) -> dict[str, int]:
    """`premium=3,free=1` as weights of these tiers (tiers not named: 0); every tier 1 when `text` is empty."""
    if not text.strip():
        return dict.fromkeys(tiers, 1)
    weights = dict.fromkeys(tiers, 0)
    for item in text.split(","):
        tier, _, weight = item.strip().partition("=")
        if tier not in weights:
            raise ValueError(f"--tier-weights: {tier!r} is not a tier of the Plan; tiers: {', '.join(tiers)}")
        if not weight.isdigit():
            raise ValueError(f"--tier-weights: {item.strip()!r}: expected tier=N, N a whole number")
        weights[tier] = int(weight)
    if not any(weights.values()):
        raise ValueError(f"--tier-weights: {text!r} gives every tier weight 0")
    return weights


def class_name(tier: str) -> str:
    """The Locust user class of a tier: `premium` -> `PremiumUser`, `gold-plus` -> `GoldPlusUser`, the invalid-key
    class -> `InvalidKeyUser`."""
    words = re.findall(r"[A-Za-z0-9]+", tier)
    return "".join(w[:1].upper() + w[1:] for w in words) + "User"
