"""Limits held: never more than limit x windows opened, and exactly the window model wherever it decides."""
from __future__ import annotations

from chargeback.expectations import Rate
from chargeback.verify import Verification
from checks.failures import require, row


def test_authorized_never_exceeds_limit_times_windows(v: Verification, user_rate: tuple[str, Rate]) -> None:
    user, rate = user_rate
    check = v.users[user]
    assert check.expectation is not None  # rates exist only for identities of the Plan
    windows = check.expectation.windows[rate.label]
    bound = rate.limit * windows
    require(check.server_authorized <= bound,
            f"{user}: {check.server_authorized} authorized, over {rate.label} x {windows} window(s) = {bound}",
            [row(check, "authorized", check.client.authorized, check.server_authorized, f"<= {bound}")])


def test_authorized_matches_the_window_model(v: Verification, user: str) -> None:
    check = v.users[user]
    if check.expectation is None:
        require(check.server_authorized == 0 and check.server_limited == 0,
                f"{user}: not an identity of the Plan, yet the server counted it",
                [row(check, "authorized", check.client.authorized, check.server_authorized, "0")])
        return
    low, high = check.expectation.authorized
    expected = str(low) if low == high else f"{low}..{high} ({check.expectation.why_range})"
    require(low <= check.server_authorized <= high, f"{user}: the window model expects {expected} authorized",
            [row(check, "authorized", check.client.authorized, check.server_authorized, expected)])
