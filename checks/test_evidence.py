"""No pass without evidence: the run's requests got answers, and those of identities the Plan calls valid reached
the limiter."""
from __future__ import annotations

from collections import Counter

from chargeback.ledger import AUTHORIZED, DECIDED, LIMITED, NO_ANSWER, NOT_CONNECTED
from chargeback.verify import Verification
from checks.failures import require


def test_the_gateway_answered(v: Verification) -> None:
    sent = sum(c.client.sent for c in v.users.values())
    answered = sum(1 for c in v.users.values() for s in c.client.statuses() if s not in (NO_ANSWER, NOT_CONNECTED))
    require(sent > 0, "the run sent no request: there is nothing to verify")
    require(answered > 0, f"none of the run's {sent} requests got an answer: the gateway at "
                          f"{v.record.meta.get('gateway_url')} was unreachable")


def test_valid_keys_reached_the_limiter(v: Verification) -> None:
    plan = v.record.meta["plan"]
    valid = [c for u, c in sorted(v.users.items())
             if c.client.sent and any(i["user"] == u and i["known"] and i["allowed"] for i in plan["identities"])]
    refused = [c.user for c in valid if all(s == 401 for s in c.client.statuses())]
    require(not refused, f"every request of {', '.join(refused)} got 401: the keys in the manifests "
                         f"({', '.join(plan['sources'])}) are not the gateway's")
    reached = sum(1 for c in valid for o in c.client.outcomes() if o[2] in (AUTHORIZED, LIMITED, DECIDED))
    statuses = Counter(s for c in valid for s in c.client.statuses())
    require(not valid or reached > 0, f"no request of the Plan's valid identities reached the limiter (statuses: "
                                      f"{', '.join(f'{n} x {s}' for s, n in sorted(statuses.items()))})")
