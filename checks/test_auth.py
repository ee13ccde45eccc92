"""Requests rejected by auth (401/403) moved no counter; identities outside the Plan have no series."""
from __future__ import annotations

from chargeback.verify import Verification
from checks.failures import require, row


def test_rejected_requests_moved_no_counter(v: Verification) -> None:
    high = sum(c.counted.total[1] for c in v.users.values())
    server = sum(c.server_authorized + c.server_limited for c in v.users.values())
    rejected = sum(c.client.rejected for c in v.users.values())
    require(server <= high,
            f"the server counted {server} calls, more than the {high} of the run that could have reached the limiter "
            f"({rejected} rejected by auth)",
            [row(c, "authorized+limited", c.client.authorized + c.client.limited,
                 c.server_authorized + c.server_limited) for c in v.users.values()
             if c.server_authorized + c.server_limited > c.counted.total[1]])


def test_no_series_for_identities_outside_the_plan(v: Verification) -> None:
    strangers = [c for c in v.users.values() if c.tier is None and (c.server_authorized or c.server_limited)]
    require(not strangers, "series for users that are not identities of the Plan",
            [row(c, "authorized", c.client.authorized, c.server_authorized, "0") for c in strangers])
