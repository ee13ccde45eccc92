"""Limits held: no more calls through than the policy allows over the run's timeline (on both sides), and every
answer the client got is one Limitador could give."""
from chargeback import verdicts
from chargeback.pytest_plugin import LimitCase, expect_each
from chargeback.verify import UserCheck


def test_policy_limit_held(limits_case: list[LimitCase]) -> None:
    expect_each([verdicts.policy_limit_held(case.check, case.rate) for case in limits_case])


def test_answers_follow_the_policy(plan_users_case: list[UserCheck]) -> None:
    expect_each([verdicts.answers_follow_the_policy(check) for check in plan_users_case])
