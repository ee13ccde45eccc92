"""The witness check's own logic on synthetic data: the client's 401/403 against what Authorino counted, widened only
by unanswered requests of keys that would be rejected and by the preflight's 401 when it may be in the span."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from test_checks_logic import PLAN, failure
from test_verify import snapshot

from chargeback import verdicts
from chargeback.ledger import NO_ANSWER, Ledger
from chargeback.record import RunRecord
from chargeback.verify import verify
from chargeback.witness import AuthWitness, client_rejections
from scenarios.model import MISSING

WITNESS = AuthWitness("kuadrant-system/abc", before=5.0, after=30.0, counted={}, restarts=0, probe=False)


def at(moment: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(moment)) + f".{int(moment * 1000) % 1000:03d}"


def record(tmp_path: Path, unanswered: str | None = None) -> RunRecord:
    """2 x 401 (no key), a 403 and a 200 of freeuser1 (answers count as they came, whatever the Plan says);
    `unanswered` adds a request of that account cut off without an answer."""
    rec = RunRecord.start(tmp_path, {"scenario": "bad-keys"}, PLAN)
    ledger = Ledger()
    ledger.record(MISSING, "(none)", 10.0, 10.01, 401)
    ledger.record(MISSING, "(none)", 11.0, 11.01, 401)
    ledger.record("freeuser1", "free", 12.0, 12.01, 403)
    ledger.record("freeuser1", "free", 13.0, 13.01, 200)
    if unanswered:
        ledger.record(unanswered, "free", 14.0, 14.05, NO_ANSWER)
    rec.finish(ledger, complete=True)
    return RunRecord.load(rec.path)


def test_client_rejections_count_answers_and_the_unanswered_requests_of_keys_that_would_be_rejected(
        tmp_path: Path) -> None:
    accounts = record(tmp_path, unanswered=MISSING).ledger.accounts.values()
    assert client_rejections(accounts, PLAN) == {401: (2, 3), 403: (1, 1)}
    valid = record(tmp_path / "valid", unanswered="freeuser1").ledger.accounts.values()
    assert client_rejections(valid, PLAN) == {401: (2, 2), 403: (1, 1)}  # a valid key would pass Authorino


@pytest.mark.parametrize("unauthenticated, denied, probe, unanswered, verdict", [
    (2, 1, False, None, "holds"),
    (3, 1, True, None, "holds"),  # the preflight's 401 in the span
    (3, 1, False, MISSING, "holds"),  # the unanswered request of a missing key was rejected
    (3, 1, False, None, "cannot decide: 3 counted as UNAUTHENTICATED, 1 more than the run's requests explain "
                        "(another client of the route in that span, or Authorino counting twice)"),
    (1, 1, True, None, "1 of the run's 2 x 401 not counted as UNAUTHENTICATED (an answer that did not come from "
                       "Authorino's decision, or a lost increment)"),
    (2, 0, False, None, "1 of the run's 1 x 403 not counted as PERMISSION_DENIED (an answer that did not come from "
                        "Authorino's decision, or a lost increment)"),
])
def test_authorinos_counts_must_match_the_runs_rejections(tmp_path: Path, unauthenticated: int, denied: int,
                                                          probe: bool, unanswered: str | None, verdict: str) -> None:
    v = verify(record(tmp_path, unanswered), snapshot(), snapshot(), resets={}, schema_name="seed")
    v.auth = dataclasses.replace(WITNESS, counted={"UNAUTHENTICATED": unauthenticated, "PERMISSION_DENIED": denied},
                                 probe=probe)
    found = verdicts.authorino_counted_the_rejections(v)
    between = (f"between Authorino's scrapes at {at(5.0)} (before the run's first request) and {at(30.0)} (after "
               "its last answer)")
    if verdict.startswith("cannot decide: "):  # more than the run explains: another client's, as likely as not
        assert found.title == f"cannot decide: AuthConfig kuadrant-system/abc: {verdict[15:]}, {between}"
    else:
        assert found.holds if verdict == "holds" else failure(found) == (
            f"AuthConfig kuadrant-system/abc: {verdict}, {between}")


def test_without_authorinos_counts_or_across_a_restart_it_cannot_decide(tmp_path: Path) -> None:
    v = verify(record(tmp_path), snapshot(), snapshot(), resets={}, schema_name="seed")
    assert verdicts.authorino_counted_the_rejections(v).title == (
        "cannot decide: the run has no Prometheus (Authorino's counters are read there)")
    v.auth = dataclasses.replace(WITNESS, counted={"UNAUTHENTICATED": 0, "PERMISSION_DENIED": 1}, restarts=1)
    assert verdicts.authorino_counted_the_rejections(v).title == (
        f"cannot decide: 1 of Authorino's counters restarted between Authorino's scrapes at {at(5.0)} (before the "
        f"run's first request) and {at(30.0)} (after its last answer)")
