"""The Ledger: classification of answers, exact merging of worker deltas, the per-user and per-tier table."""
from __future__ import annotations

import random

import numpy as np
from test_plan import DEPLOY

from chargeback.ledger import (
    AUTHORIZED,
    COUNTS,
    DECIDED,
    LIMITED,
    LIMITER_TIMEOUT,
    MAYBE,
    MODEL_429,
    NO_ANSWER,
    NO_REPORT,
    NOT_CONNECTED,
    NOT_REACHED,
    Ledger,
    classify,
    outcomes_of,
)
from chargeback.plan import load_plan


def test_classification_follows_where_the_request_stopped() -> None:
    assert [classify(s) for s in (200, 404, 429, 401, 403, 500, 503, NO_ANSWER, NOT_CONNECTED, MODEL_429)] == [
        ("authorized",), ("authorized",), ("limited",), ("rejected",), ("rejected",),
        ("authorized", "errors"), ("authorized", "errors"), ("errors",), ("errors",), ("authorized", "errors")]


def test_what_became_of_a_request_at_the_limiter() -> None:
    def outcomes(took: list[float], statuses: list[int], limiter_timeout: float = LIMITER_TIMEOUT) -> list[str]:
        return outcomes_of(np.zeros(len(took)), np.array(took), np.array(statuses), limiter_timeout).tolist()

    statuses = [200, 503, MODEL_429, 429, 401, 403, NOT_CONNECTED]
    assert outcomes([0.01] * 7, statuses) == [
        AUTHORIZED, AUTHORIZED, AUTHORIZED, LIMITED, NOT_REACHED, NOT_REACHED, NOT_REACHED]
    assert outcomes([0.05, 0.1, 0.15, 30.0], [NO_ANSWER] * 4) == [MAYBE, MAYBE, DECIDED, DECIDED]
    assert outcomes([0.15], [NO_ANSWER], limiter_timeout=0.2) == [MAYBE]


def test_record_counts_tokens_times_and_timeline() -> None:
    ledger = Ledger()
    ledger.record("freeuser1", "free", 10.5, 10.6, 200, (2, 10, 12))
    ledger.record("freeuser1", "free", 10.0, 10.2, 429)
    ledger.record("freeuser1", "free", 11.0, 41.0, NO_ANSWER, None, 7)
    [row] = ledger.drain()
    assert {k: row[k] for k in ("sent", "authorized", "limited", "rejected", "errors", "prompt_tokens",
                                "completion_tokens", "total_tokens", "first", "last")} == {
        "sent": 3, "authorized": 1, "limited": 1, "rejected": 0, "errors": 1, "prompt_tokens": 2,
        "completion_tokens": 10, "total_tokens": 12, "first": 10.0, "last": 11.0}
    ledger.merge([row])
    account = ledger.accounts["freeuser1"]
    assert account.entries() == [(10.5, 10.6, 200, -1), (10.0, 10.2, 429, -1), (11.0, 41.0, 0, 7)]
    assert ledger.last_answer() == 41.0 and account.unanswered == 1
    timeline = account.timeline()
    assert (timeline.sent.tolist(), timeline.outcome.tolist()) == ([10.0, 10.5, 11.0], [LIMITED, AUTHORIZED, DECIDED])
    assert timeline.tokens.tolist() == [NO_REPORT, 12, NO_REPORT]  # the tokens each answer reported
    assert [sum(len(c) * c.itemsize for c in account.columns) for account in ledger.accounts.values()] == [3 * 26]
    ledger.record("freeuser1", "free", 12.0, 12.1, 200)  # the columns still grow after being read
    assert (len(account.timeline()), account.statuses().tolist()[-1]) == (4, 200)


def test_drained_deltas_merge_to_the_same_totals_as_one_ledger() -> None:
    rng = random.Random(7)
    events = [(rng.choice(["a", "b", "c"]), rng.random() * 100, rng.choice([200, 429, 401, 500, 0]))
              for _ in range(2000)]
    whole = Ledger()
    workers = [Ledger(), Ledger()]
    master = Ledger()
    for n, (user, t, status) in enumerate(events):
        usage = (1, 2, 3) if status == 200 else None
        whole.record(user, "free", t, t + 0.01, status, usage)
        workers[n % 2].record(user, "free", t, t + 0.01, status, usage)
        if n % 97 == 0:  # periodic reports
            master.merge(workers[n % 2].drain())
    for worker in workers:
        master.merge(worker.drain())
    assert workers[0].accounts == {} and workers[1].accounts == {}
    def content(ledger: Ledger) -> dict[str, tuple]:
        return {a.user: (*(getattr(a, n) for n in COUNTS), a.first, a.last, sorted(a.entries()))
                for a in ledger.accounts.values()}

    assert content(master) == content(whole) and sum(len(a.entries()) for a in master.accounts.values()) == 2000


def test_a_delta_carries_only_the_requests_since_the_last_one_as_26_bytes_each() -> None:
    worker = Ledger()
    for n in range(10_000):
        worker.record(f"u{n % 100}", "free", float(n), n + 0.1, 200)
    worker.drain()
    for n in range(30):
        worker.record("u1", "free", 1e5 + n, 1e5 + n + 0.1, 429, None, 4)
    [delta] = worker.drain()
    assert (delta["sent"], delta["limited"], sum(len(column) for column in delta["columns"])) == (30, 30, 30 * 26)


def test_table_prices_authorized_calls_and_tokens_per_tier() -> None:
    plan = load_plan([DEPLOY])
    ledger = Ledger()
    for _ in range(3):
        ledger.record("premiumuser1", "premium", 1.0, 1.1, 200, (2, 20, 22))
    ledger.record("premiumuser2", "premium", 1.0, 1.1, 429)
    ledger.record("freeuser1", "free", 1.0, 1.1, 200, (1, 1, 2))
    users, tiers = ledger.table(plan)
    assert [(r["user"], r["authorized"], r["limited"], r["cost"]) for r in users] == [
        ("freeuser1", 1, 0, 0.001001), ("premiumuser1", 3, 0, 0.006066), ("premiumuser2", 0, 1, 0.0)]
    assert [(t["tier"], t["users"], t["sent"], t["total_tokens"], t["cost"]) for t in tiers] == [
        ("free", 1, 1, 2, 0.001001), ("premium", 2, 4, 66, 0.006066)]


def test_unanswered_requests_are_counted_from_the_timeline() -> None:
    ledger = Ledger()
    for status in (200, NO_ANSWER, 429, NO_ANSWER):
        ledger.record("u", "free", 1.0, 2.0, status)
    assert (ledger.accounts["u"].unanswered, ledger.accounts["u"].errors) == (2, 2)
