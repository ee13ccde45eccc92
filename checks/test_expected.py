"""The expected table: what the window model says Limitador should have counted per user, from the client's
timeline and the counters' state before the run."""
from chargeback import verdicts
from chargeback.pytest_plugin import expect_each
from chargeback.verify import UserCheck, Verification


def test_counts_match_the_window_model(plan_users_case: list[UserCheck], verification: Verification) -> None:
    expect_each([verdicts.counts_match_the_window_model(check, verification) for check in plan_users_case])
