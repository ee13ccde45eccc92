"""The expected table: what the window model says Limitador should have counted per user, from the client's
timeline and the counters' state before the run."""
from __future__ import annotations

from chargeback.verify import Verification
from checks.failures import require, row, undecided


def span(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}..{bounds[1]}"


def test_counts_match_the_window_model(v: Verification, plan_user: str | None) -> None:
    if plan_user is None:
        undecided("no identity of the Plan in this run")
    check = v.users[plan_user]
    prediction = check.prediction
    if prediction is None:
        undecided(check.explanation.why if check.explanation else "the window model does not follow this user")
    last = check.client.last_answer()
    if check.open_ended or (last is not None and v.after.window[0] < last):
        undecided(check.open_ended or "the counters were last read before the run's last answer")
    authorized, limited = prediction.authorized, prediction.limited
    why = "" if prediction.decided and limited[0] == limited[1] else f" ({prediction.why_range})"
    require(authorized[0] <= check.server_authorized <= authorized[1] and limited[0] <= check.server_limited <= limited[1],
            f"{plan_user}: the window model expects {span(authorized)} authorized / {span(limited)} limited{why}",
            [row(check, "authorized", check.client.authorized, check.server_authorized, span(authorized)),
             row(check, "limited", check.client.limited, check.server_limited, span(limited))])
