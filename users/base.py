"""The public tier user: a FastHttpUser bound to one identity of its tier, whose requests the ledger accounts.

Subclass it with your own tasks; every request through `self.client` carries the identity in its context, so the
ledger (fed by Locust's `request` event, users/accounting.py) accounts it:

    class PremiumChat(TierUser):
        tier = "premium"            # replaces the generated PremiumUser

        @task
        def chat(self) -> None:
            self.client.post("/v1/chat/completions", headers=self.headers, json={...})
"""
from __future__ import annotations

import random
import time
from typing import Any, ClassVar

from gevent import GreenletExit
from locust import FastHttpUser, task
from locust.contrib.fasthttp import FastHttpSession
from locust.exception import StopUser

from chargeback.ledger import NO_ANSWER
from scenarios import Slot

from .run import Run, run_of
from .wire import JSON_HEADERS, ledger_status, request_body, verdict


class TierUser(FastHttpUser):
    """A simulated user of `tier`: on start it takes the next identity of its tier (a scenario's slot, or with
    Locust's controls the tier's identities round-robin, across workers); `self.headers` carry its key. It has no
    task of its own: a subclass brings them (paced by the stream's pattern unless it sets `wait_time`)."""

    abstract = True
    tier: ClassVar[str] = ""
    generated: ClassVar[bool] = False  # made from the Plan (users/tiers.py); a user's own class for a tier replaces it
    network_timeout = 30.0
    connection_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.client.__class__ = LedgerSession  # same session, plus the budget and requests cut off by a stop

    def on_start(self) -> None:
        self.run_state: Run = run_of(self.environment)
        slot = self.run_state.slots.claim(self.tier)
        if slot is None:
            raise StopUser()
        self.slot: Slot = slot
        self.identity = slot.account
        self.request_context = {"identity": slot.account, "tier": slot.user_class, "sender": slot.index,
                                "model": slot.stream.model}
        self.headers = {**JSON_HEADERS, **self.run_state.credentials(slot)}
        self.sent = 0
        self.last_start = 0.0
        self.rng = random.Random(slot.index)
        stream = slot.stream
        self.body = request_body(stream)
        self.expect_rejection = stream.credential != "valid"
        self.request_name = f"{slot.user_class} {stream.path}"

    def context(self) -> dict[str, Any]:
        """What the ledger reads from each request's context (Locust copies it into each request's)."""
        return self.request_context

    def wait_time(self) -> float:
        """The stream's pacing, spent in Locust's wait (so a stop never waits for it)."""
        stream = self.slot.stream
        if stream.budget is not None and self.sent >= stream.budget:
            return 0.0
        if stream.requests and self.sent and self.sent % stream.requests == 0:
            return stream.round_gap
        return stream.pattern.delay(self.sent, time.time() - self.last_start, self.rng)

    def before_request(self) -> None:
        """Stop this user once its stream's budget is spent; note when the next request starts."""
        budget = self.slot.stream.budget
        if budget is not None and self.sent >= budget:
            self.run_state.slots.finish(self.slot)
            raise StopUser()
        self.last_start = time.time()

    def cut_off(self) -> None:
        """A stop killed this user while its request was in flight: the gateway may have counted it, so the
        ledger keeps it, unanswered."""
        self.run_state.ledger.record(self.slot.account, self.slot.user_class, self.last_start, time.time(),
                                     NO_ANSWER, None, self.slot.index)



class StreamUser(TierUser):
    """The generated tier users' task: the request of its slot's stream (users/tiers.py makes one per tier)."""

    abstract = True

    @task
    def send(self) -> None:
        """The stream's request; Kuadrant's 429 (and for invalid keys 401/403) is an expected answer."""
        with self.client.post(self.slot.stream.path, data=self.body, headers=self.headers, catch_response=True,
                              name=self.request_name) as response:
            status = ledger_status(response.status_code or 0, response.content, getattr(response, "error", None))
            problem = verdict(status, self.expect_rejection)
            if problem:
                response.failure(problem)
            else:
                response.success()


class LedgerSession(FastHttpSession):
    """A TierUser's session: its budget is checked before each request, and a request cut off by a stop (no
    `request` event fires then) still reaches the ledger."""

    user: TierUser

    def request(self, *args: Any, **kwargs: Any) -> Any:
        self.user.before_request()
        try:
            return super().request(*args, **kwargs)
        except GreenletExit:
            self.user.cut_off()
            raise
        finally:
            self.user.sent += 1
