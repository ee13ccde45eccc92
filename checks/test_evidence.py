"""No pass without evidence: the run's requests got answers, and those of identities the Plan calls valid reached
the limiter."""
from chargeback import verdicts
from chargeback.pytest_plugin import expect
from chargeback.verify import Verification


def test_the_gateway_answered(verification: Verification) -> None:
    expect(verdicts.gateway_answered(verification))


def test_valid_keys_reached_the_limiter(verification: Verification) -> None:
    expect(verdicts.valid_keys_reached_the_limiter(verification))
