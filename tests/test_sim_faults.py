"""The stand-in's fault syntax: what each `--fault` parses to, and one error naming every kind."""
from __future__ import annotations

import pytest

from sim.faults import Faults


def test_new_fault_kinds_parse() -> None:
    faults = Faults.parse(["mislabel:freeuser1=premium", "fail-open:premiumuser2", "forget-after:7", "model-429"])
    assert (faults.mislabel, faults.fail_open, faults.forget_after, faults.pending, faults.reset_after) == (
        {"freeuser1": "premium"}, {"premiumuser2"}, 7, {"model-429": None}, None)
    assert faults.fails_open("premiumuser2") and not faults.fails_open("freeuser1")
    assert faults.take("model-429", "anyone") and not faults.take("model-429", "anyone")


def test_fail_open_without_a_user_means_everyone_and_is_not_used_up() -> None:
    faults = Faults.parse(["fail-open"])
    assert faults.fail_open == {None}
    assert all(faults.fails_open(user) for user in ("a", "b", "a"))


def test_any_fault_makes_the_faults_true() -> None:
    assert not Faults.parse([])
    assert all(Faults.parse([spec]) for spec in ("mislabel:a=b", "fail-open", "forget-after:1", "no-group"))


@pytest.mark.parametrize("spec", ["mislabel:freeuser1", "mislabel:=premium", "forget-after:soon", "fail-closed"])
def test_a_bad_fault_is_one_error_listing_the_syntax(spec: str) -> None:
    with pytest.raises(ValueError) as error:
        Faults.parse([spec])
    assert str(error.value) == (
        f"--fault {spec!r}: expected one of over-limit[:USER], token-over-limit[:USER], drop-authorized[:USER], "
        "double-count[:USER], drop-tokens[:USER], model-429[:USER], auth-uncounted[:USER], early-reset[:USER], "
        "fail-open[:USER], headers-stale[:USER], mislabel:USER=GROUP, no-group, reset-after:N, forget-after:N")
