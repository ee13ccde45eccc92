"""Limits held: no more calls through than the policy allows over the run's timeline (on both sides), and every
answer the client got is one Limitador could give; an overshoot passes (saying so) only within what the requests in
flight at once explain (Limitador's check-then-update race), never with --strict-limits."""
from chargeback import verdicts
from chargeback.pytest_plugin import LimitCase, expect_each
from chargeback.verify import UserCheck, Verification


def test_policy_limit_held(limits_case: list[LimitCase], verification: Verification) -> None:
    expect_each([verdicts.policy_limit_held(case.check, case.rate, verification.strict) for case in limits_case])


def test_answers_follow_the_policy(plan_users_case: list[UserCheck], verification: Verification) -> None:
    expect_each([verdicts.answers_follow_the_policy(check, verification.strict) for check in plan_users_case])
