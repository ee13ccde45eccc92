"""Own checks with the plugin's fixtures: `pytest examples/my_checks --run runs/latest`."""
from chargeback.pytest_plugin import LimitCase
from chargeback.verify import UserCheck, Verification


def test_every_tier_of_the_plan_sent_traffic(verification: Verification) -> None:
    sent = {check.tier for check in verification.users.values() if check.client.sent}
    missing = set(verification.record.plan.tiers) - sent
    assert not missing, f"tiers without traffic: {', '.join(sorted(missing))}"


def test_no_user_was_limited_before_reaching_a_limit(limit_case: LimitCase) -> None:
    check, rate = limit_case.check, limit_case.rate
    if check.client.limited:
        assert check.client.authorized >= min(rate.limit, check.client.sent), (
            f"{check.user} was limited after {check.client.authorized} calls under {rate.label}")


def test_tokens_were_billed_for_every_authorized_call(plan_user_case: UserCheck) -> None:
    client = plan_user_case.client
    assert (client.total_tokens > 0) == (client.authorized > client.errors), (
        f"{plan_user_case.user}: {client.authorized} authorized calls, {client.total_tokens} tokens")
