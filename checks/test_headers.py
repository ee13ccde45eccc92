"""Limitador's rate-limit headers, a second witness of each window: they list each limit as the policy has it, and
their remaining and reset agree with one another and with the answers (skipped when the run's answers had none)."""
from chargeback import headers
from chargeback.pytest_plugin import LimitCase, expect_each
from chargeback.verify import Verification


def test_rate_limit_headers_agree(limits_case: list[LimitCase], verification: Verification) -> None:
    expect_each([headers.rate_limit_headers_agree(case.check, case.rate, verification) for case in limits_case])
