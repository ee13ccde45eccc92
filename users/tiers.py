"""One Locust user class per tier of the Plan (PremiumUser, FreeUser, ...), plus one for invalid keys."""
from __future__ import annotations

from chargeback.plan import Plan
from scenarios import INVALID_CLASS, class_name

from .base import StreamUser, TierUser


def tier_user_classes(plan: Plan) -> list[type[TierUser]]:
    """A class per tier that has identities Authorino knows, and one for requests without a valid key."""
    tiers = [t.name for t in plan.tiers.values() if any(plan.identity(u).known for u in t.users)]
    return [
        type(class_name(tier), (StreamUser,), {"tier": tier, "generated": True, "__module__": __name__,
                                              "__doc__": f"A simulated user of the {tier} tier."})
        for tier in tiers + [INVALID_CLASS]
    ]
