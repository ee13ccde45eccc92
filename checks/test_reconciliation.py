"""The server's authorized and limited counters rose by exactly what the client saw, per user and per group."""
from __future__ import annotations

from chargeback.verify import Verification
from checks.failures import require, row


def test_user_counters_match_the_ledger(v: Verification, user: str) -> None:
    check = v.users[user]
    rows = [row(check, "authorized", check.client.authorized, check.server_authorized),
            row(check, "limited", check.client.limited, check.server_limited)]
    require(not check.resets, f"{user}: {check.resets} counter(s) reset between the snapshots; "
            "the server's count cannot be compared", rows)
    require(all(r["difference"] == 0 for r in rows), f"{user}: the server counted differently", rows)


def test_group_counters_match_the_ledger(v: Verification, group: str) -> None:
    sums = v.groups()[group]
    rows = [{"group": group, "counter": kind, "client": sums[f"client_{kind}"], "server": sums[f"server_{kind}"],
             "difference": sums[f"server_{kind}"] - sums[f"client_{kind}"]} for kind in ("authorized", "limited")]
    require(all(r["difference"] == 0 for r in rows), f"group {group}: the server counted differently", rows)
