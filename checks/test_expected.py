"""The expected table: what the window model says Limitador should have counted per user, from the client's
timeline and the counters' state before the run."""
from chargeback import verdicts
from chargeback.pytest_plugin import expect
from chargeback.verify import UserCheck, Verification


def test_counts_match_the_window_model(plan_user_case: UserCheck, verification: Verification) -> None:
    expect(verdicts.counts_match_the_window_model(plan_user_case, verification))
