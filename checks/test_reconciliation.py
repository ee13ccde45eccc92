"""The server's counters rose by exactly what the client saw, per user and per group; each user is billed under
the group the Plan gives it; token hits match the ledger."""
from chargeback import verdicts
from chargeback.pytest_plugin import expect
from chargeback.verify import GroupCount, UserCheck


def test_user_counters_match_the_ledger(user_case: UserCheck) -> None:
    expect(verdicts.user_counters_match_the_ledger(user_case))


def test_user_is_billed_under_the_plans_group(plan_user_case: UserCheck) -> None:
    expect(verdicts.billed_under_the_plans_group(plan_user_case))


def test_token_counters_match_the_ledger(token_case: UserCheck) -> None:
    expect(verdicts.token_counters_match_the_ledger(token_case))


def test_group_counters_match_the_ledger(group_case: GroupCount) -> None:
    expect(verdicts.group_counters_match_the_ledger(group_case))
