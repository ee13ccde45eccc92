"""The server's counters rose by exactly what the client saw, per user and per group; each user is billed under
the group the Plan gives it; token hits match the ledger."""
from chargeback import verdicts
from chargeback.pytest_plugin import expect, expect_each
from chargeback.verify import GroupCount, UserCheck


def test_user_counters_match_the_ledger(users_case: list[UserCheck]) -> None:
    expect_each([verdicts.user_counters_match_the_ledger(check) for check in users_case])


def test_user_is_billed_under_the_plans_group(plan_users_case: list[UserCheck]) -> None:
    expect_each([verdicts.billed_under_the_plans_group(check) for check in plan_users_case])


def test_token_counters_match_the_ledger(tokens_case: list[UserCheck]) -> None:
    expect_each([verdicts.token_counters_match_the_ledger(check) for check in tokens_case])


def test_group_counters_match_the_ledger(group_case: GroupCount) -> None:
    expect(verdicts.group_counters_match_the_ledger(group_case))
