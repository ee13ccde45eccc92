"""Named scenarios: which tiers and users send traffic, how it is paced and how much. Limits come from the Plan."""
from __future__ import annotations

import re
from dataclasses import dataclass

from chargeback.plan import Plan

from .patterns import BackToBack, Bursty, Pattern, Poisson, Steady

INVALID_CLASS = "(invalid key)"  # the user class of slots without a valid key
MISSING, UNKNOWN = "(missing key)", "(unknown key)"  # their ledger accounts


@dataclass(frozen=True)
class Stream:
    """What some simulated users do: who they are, how they pace, how many requests they send."""

    users: tuple[str, ...] = ()  # named identities
    tiers: tuple[str, ...] = ()  # every identity of these tiers; "*" for every tier
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


@dataclass(frozen=True)
class Slot:
    """One simulated user of a scenario: its user class (a tier), identity and stream."""

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

    def slots(self, plan: Plan) -> list[Slot]:
        """The simulated users, identities spread evenly; a one-line ValueError for a name the Plan lacks."""
        slots: list[Slot] = []
        for stream in self.streams:
            for user_class, account in self._accounts(stream, plan):
                slots.append(Slot(len(slots), user_class, account, stream))
        return slots

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
            unknown = [t for t in stream.tiers if t != "*" and t not in plan.tiers]
            if unknown:
                raise ValueError(f"scenario {self.name} names tier {unknown[0]}, which the Plan "
                                 f"({', '.join(plan.sources)}) does not have; tiers: {', '.join(plan.tiers)}")
            identities = [i for i in plan.identities if i.known and i.allowed and (
                i.user in stream.users or i.tier in stream.tiers or "*" in stream.tiers)]
        return [(i.tier, i.user) for _ in range(stream.per_identity) for i in identities]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "seed-demo",
        "The seed demo: 8 requests as premiumuser1, 5 as freeuser1, 6 as premiumuser2, each user sequential",
        (Stream(users=("premiumuser1",), requests=8, prompt="Premium request", max_tokens=20),
         Stream(users=("freeuser1",), requests=5, prompt="Free request", max_tokens=10),
         Stream(users=("premiumuser2",), requests=6, prompt="Premium2 request", max_tokens=15)),
    ),
    Scenario(
        "realistic-hours",
        "The seed's three rounds: premium users steady, 5 requests each; free users bursty, 3 each; 10 s idle between",
        (Stream(tiers=("premium",), pattern=Steady(0.5), requests=5, rounds=3, round_gap=10.0,
                prompt="Business request", max_tokens=20),
         Stream(tiers=("free",), pattern=Bursty(3, 10.0), requests=3, rounds=3, round_gap=10.0,
                prompt="Personal request", max_tokens=10)),
    ),
    Scenario(
        "saturation",
        "Every tier far over its limits at once: two users per identity, 20 requests/s each (Poisson), for 10 s",
        (Stream(tiers=("*",), per_identity=2, pattern=Poisson(20.0), prompt="Saturation request"),),
        duration=10.0,
    ),
    Scenario(
        "bad-keys",
        "Requests the gateway must reject before the limiter: missing key, unknown key, a group the policy disallows",
        (Stream(credential="missing", requests=3), Stream(credential="unknown", requests=3),
         Stream(credential="disallowed", requests=3)),
    ),
)}


def class_name(tier: str) -> str:
    """The Locust user class of a tier: `premium` -> `PremiumUser`, `gold-plus` -> `GoldPlusUser`, the invalid-key
    class -> `InvalidKeyUser`."""
    words = re.findall(r"[A-Za-z0-9]+", tier)
    return "".join(w[:1].upper() + w[1:] for w in words) + "User"


def scenario_named(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}: choose one of {', '.join(SCENARIOS)}") from None
