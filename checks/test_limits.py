"""Limits held: no more calls through than the policy allows over the run's timeline (on both sides), and every
answer the client got is one Limitador could give."""
from chargeback import verdicts
from chargeback.pytest_plugin import LimitCase, expect
from chargeback.verify import UserCheck


def test_policy_limit_held(limit_case: LimitCase) -> None:
    expect(verdicts.policy_limit_held(limit_case.check, limit_case.rate))


def test_answers_follow_the_policy(plan_user_case: UserCheck) -> None:
    expect(verdicts.answers_follow_the_policy(plan_user_case))
