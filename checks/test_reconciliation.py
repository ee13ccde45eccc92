"""The server's authorized, limited and token counters rose by exactly what the client saw, per user and group."""
from __future__ import annotations

from typing import Any

import pytest

from chargeback.verify import UserCheck, Verification
from checks.failures import require, row


def require_no_reset(check: UserCheck, rows: list[dict[str, object]]) -> None:
    require(not check.resets, f"{check.user}: {check.resets} counter(s) reset between the snapshots; "
            "the server's count cannot be compared", rows)


def within_unanswered(rows: list[dict[str, Any]], lost: int) -> bool:
    """Each request that got no answer may have been counted once, as authorized or limited, or not at all."""
    differences = [r["difference"] for r in rows]
    return all(0 <= d <= lost for d in differences) and sum(differences) <= lost


def test_user_counters_match_the_ledger(v: Verification, user: str) -> None:
    check = v.users[user]
    lost = check.client.unanswered
    expected = f"+0..{lost} (unanswered)" if lost else ""
    rows = [row(check, "authorized", check.client.authorized, check.server_authorized, expected),
            row(check, "limited", check.client.limited, check.server_limited, expected)]
    require_no_reset(check, rows)
    require(within_unanswered(rows, lost), f"{user}: the server counted differently", rows)


def test_token_counters_match_the_ledger(v: Verification, token_user: str | None) -> None:
    if token_user is None:
        pytest.skip(f"no token counters to compare (no token limit applies, or the {v.schema.name} schema has none)")
    check = v.users[token_user]
    assert check.server_tokens is not None
    rows = [row(check, "total tokens", check.client.total_tokens, check.server_tokens)]
    require_no_reset(check, rows)
    require(rows[0]["difference"] == 0, f"{token_user}: the server counted other token hits", rows)


def test_group_counters_match_the_ledger(v: Verification, group: str) -> None:
    sums = v.groups()[group]
    rows = [{"group": group, "counter": kind, "client": sums[f"client_{kind}"], "server": sums[f"server_{kind}"],
             "difference": sums[f"server_{kind}"] - sums[f"client_{kind}"]} for kind in ("authorized", "limited")]
    require(within_unanswered(rows, sums["unanswered"]), f"group {group}: the server counted differently", rows)
