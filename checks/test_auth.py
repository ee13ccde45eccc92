"""Requests rejected by auth (401/403) moved no counter; identities outside the Plan have no series; Authorino's own
counters witness the run's 401 and 403."""
from chargeback import verdicts
from chargeback.pytest_plugin import expect
from chargeback.verify import Verification


def test_rejected_requests_moved_no_counter(verification: Verification) -> None:
    expect(verdicts.rejected_requests_moved_no_counter(verification))


def test_no_series_for_identities_outside_the_plan(verification: Verification) -> None:
    expect(verdicts.no_series_for_identities_outside_the_plan(verification))


def test_authorino_counted_the_rejections(verification: Verification) -> None:
    expect(verdicts.authorino_counted_the_rejections(verification))
