"""Limits held: no more calls through than the policy allows over the run's timeline (on both sides), and every
answer the client got is one Limitador could give."""
from __future__ import annotations

from chargeback.expectations import Rate
from chargeback.verify import Verification
from checks.failures import clock, require, row, undecided


def test_policy_limit_held(v: Verification, user_rate: tuple[str, Rate]) -> None:
    user, rate = user_rate
    check = v.users[user]
    if rate.label not in check.bounds:
        undecided(check.explanation.why if check.explanation else "the window model does not follow this user")
    most, windows = check.bounds[rate.label]
    client, server = check.client.authorized, check.server_authorized
    require(client <= most and server <= most,
            f"{user}: the limit {rate.label} did not hold: the client got {client} answer(s) past the limiter and the "
            f"server counted {server} authorized, but over the run's timeline the policy lets at most {most} through "
            f"({windows} window(s))",
            [row(check, "authorized", client, server, f"<= {most}")])


def test_answers_follow_the_policy(v: Verification, plan_user: str | None) -> None:
    if plan_user is None:
        undecided("no identity of the Plan in this run")
    check = v.users[plan_user]
    explanation = check.explanation
    assert explanation is not None and check.prior is not None
    if explanation.consistent is None:
        undecided(explanation.why)
    odd = explanation.unexplained
    if odd is None:
        return
    before = f"(state before the run: {check.prior.source})"
    if odd.first == odd.last and odd.authorized:
        require(False, f"{plan_user}: request {odd.first} (sent {clock(odd.sent[0])}) got through the limiter, but "
                       f"{' and '.join(odd.full) or 'a limit'} was already full in every possible world {before}")
    if odd.first == odd.last:
        require(False, f"{plan_user}: request {odd.first} (sent {clock(odd.sent[0])}) got Kuadrant's 429, but every "
                       f"limit had room in every possible world {before}")
    low, high = odd.possible
    require(False, f"{plan_user}: requests {odd.first}-{odd.last} (sent {clock(odd.sent[0])} to {clock(odd.sent[1])}, "
                   f"in flight together) got {odd.authorized} x through and {odd.limited} x 429, but the policy lets "
                   f"{low}" + (f"..{high}" if high > low else "") + f" of them through {before}")
