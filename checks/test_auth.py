"""Requests rejected by auth (401/403) moved no counter; identities outside the Plan have no series."""
from __future__ import annotations

import pytest

from chargeback.verify import Verification
from checks.failures import require, row


def test_rejected_requests_moved_no_counter(v: Verification) -> None:
    rejected = [c for c in v.users.values() if c.client.rejected]
    if not rejected:
        pytest.skip("no request of this run was rejected by auth")
    moved = [c for c in rejected if c.server_authorized + c.server_limited > c.counted.total[1]]
    require(not moved, f"{', '.join(c.user for c in moved)}: the server counted more calls than reached the limiter; "
                       f"{sum(c.client.rejected for c in moved)} request(s) were rejected by auth (401/403)",
            [row(c, "authorized+limited", c.counted.total[1], c.server_authorized + c.server_limited) for c in moved])


def test_no_series_for_identities_outside_the_plan(v: Verification) -> None:
    strangers = [c for c in v.users.values() if c.tier is None and (c.server_authorized or c.server_limited)]
    require(not strangers, "series for users that are not identities of the Plan",
            [row(c, "authorized", c.client.authorized, c.server_authorized, "0") for c in strangers])
