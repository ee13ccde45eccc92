"""The server's authorized, limited and token counters rose by exactly what the client saw, per user and group."""
from __future__ import annotations

import pytest

from chargeback.verify import Verification
from checks.failures import require, row


def test_user_counters_match_the_ledger(v: Verification, user: str) -> None:
    check = v.users[user]
    lost = check.client.unanswered  # no answer: each may have been counted once, either way
    expected = f"+0..{lost} (unanswered)" if lost else ""
    rows = [row(check, "authorized", check.client.authorized, check.server_authorized, expected),
            row(check, "limited", check.client.limited, check.server_limited, expected)]
    require(not check.resets, f"{user}: {check.resets} counter(s) reset between the snapshots; "
            "the server's count cannot be compared", rows)
    extra = (check.server_authorized - check.client.authorized) + (check.server_limited - check.client.limited)
    require(all(0 <= r["difference"] <= lost for r in rows) and extra <= lost,
            f"{user}: the server counted differently", rows)


def test_token_counters_match_the_ledger(v: Verification, token_user: str | None) -> None:
    if token_user is None:
        pytest.skip(f"no token counters to compare (no token limit applies, or the {v.schema.name} schema has none)")
    check = v.users[token_user]
    assert check.server_tokens is not None
    rows = [row(check, "total tokens", check.client.total_tokens, check.server_tokens)]
    require(not check.resets, f"{token_user}: {check.resets} counter(s) reset between the snapshots; "
            "the server's count cannot be compared", rows)
    require(rows[0]["difference"] == 0, f"{token_user}: the server counted other token hits", rows)


def test_group_counters_match_the_ledger(v: Verification, group: str) -> None:
    sums = v.groups()[group]
    rows = [{"group": group, "counter": kind, "client": sums[f"client_{kind}"], "server": sums[f"server_{kind}"],
             "difference": sums[f"server_{kind}"] - sums[f"client_{kind}"]} for kind in ("authorized", "limited")]
    lost = sums["unanswered"]  # no answer: each may have been counted once, either way
    require(all(0 <= r["difference"] <= lost for r in rows) and sum(r["difference"] for r in rows) <= lost,
            f"group {group}: the server counted differently", rows)
