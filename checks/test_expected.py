"""The scenario's own expected table (seed-demo: authorized 8 / 2 / 6, limited 0 / 3 / 0) holds exactly."""
from __future__ import annotations

import pytest

from chargeback.verify import Verification
from checks.failures import require, row


def test_scenario_expected_table(v: Verification, expected_user: str | None) -> None:
    if expected_user is None:
        pytest.skip(f"scenario {v.record.meta['scenario']} states no expected table")
    authorized, limited = v.expected[expected_user]
    check = v.users.get(expected_user)
    require(check is not None, f"{expected_user}: expected {authorized} authorized / {limited} limited, but no data", [])
    assert check is not None
    require((check.server_authorized, check.server_limited) == (authorized, limited),
            f"{expected_user}: the scenario expects {authorized} authorized / {limited} limited",
            [row(check, "authorized", check.client.authorized, check.server_authorized, str(authorized)),
             row(check, "limited", check.client.limited, check.server_limited, str(limited))])
