"""The server's counters rose by exactly what the client saw, per user and per group; each user is billed under
the group the Plan gives it; token hits match the ledger."""
from __future__ import annotations

import pytest

from chargeback.verify import UserCheck, Verification
from checks.failures import clock, require, row


def require_no_reset(check: UserCheck, rows: list[dict[str, object]]) -> None:
    require(not check.resets, f"{check.user}: {check.resets} counter(s) reset between the snapshots; "
            "the server's count cannot be compared", rows)


def why_different(check: UserCheck) -> str:
    """The cause a mismatch points at: calls the run did not send, calls not counted, or another split."""
    low, high = check.counted.total
    server = check.server_authorized + check.server_limited
    if server > high:
        when = f"between {clock(check.foreign[0])} and {clock(check.foreign[1])}" if check.foreign else "during the run"
        return (f"{check.user}: the server counted {server - high} call(s) the run did not send, {when}: another "
                "client using this key, or the gateway counting calls twice")
    if server < low:
        return (f"{check.user}: {low - server} call(s) that reached the limiter were not counted (the gateway "
                "failing open, or a dropped increment)")
    return f"{check.user}: the server counted authorized and limited calls differently from the client's answers"


def test_user_counters_match_the_ledger(v: Verification, user: str) -> None:
    check = v.users[user]
    rows = [row(check, "authorized", check.client.authorized, check.server_authorized,
                check.counted.expected("authorized")),
            row(check, "limited", check.client.limited, check.server_limited, check.counted.expected("limited"))]
    require_no_reset(check, rows)
    require(check.counted.allows(check.server_authorized, check.server_limited), why_different(check), rows)


def test_user_is_billed_under_the_plans_group(v: Verification, plan_user: str | None) -> None:
    if plan_user is None:
        pytest.skip("no identity of the Plan in this run")
    check = v.users[plan_user]
    labels = sorted(g for g in check.billed if g is not None)
    expected = " or ".join(sorted(check.allowed_groups))
    require(len(labels) <= 1, f"{plan_user}: billed under several groups: {' and '.join(labels)}; the Plan puts "
                              f"the user in {expected}")
    require(not labels or labels[0] in check.allowed_groups,
            f"{plan_user}: billed under group {labels[0] if labels else ''}, but the Plan puts the user in {expected}")
    require(None not in check.billed or not labels,
            f"{plan_user}: some of the user's series carry the group {labels[0] if labels else ''}, others none")


def test_token_counters_match_the_ledger(v: Verification, token_user: str | None) -> None:
    if token_user is None:
        pytest.skip(f"no token counters to compare (no token limit applies, or the {v.schema.name} schema has none)")
    check = v.users[token_user]
    assert check.server_tokens is not None
    rows = [row(check, "total tokens", check.client.total_tokens, check.server_tokens)]
    require_no_reset(check, rows)
    require(rows[0]["difference"] == 0, f"{token_user}: the server counted other token hits", rows)


def test_group_counters_match_the_ledger(v: Verification, group: str) -> None:
    counted, authorized, limited = v.groups[group]
    rows = [{"group": group, "counter": kind, "client": bounds, "server": server}
            for kind, bounds, server in (("authorized", counted.expected("authorized"), authorized),
                                         ("limited", counted.expected("limited"), limited))]
    require(counted.allows(authorized, limited), f"group {group}: the server counted differently", rows)
