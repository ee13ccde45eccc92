"""The tier user: a FastHttpUser bound to one scenario slot (an identity), accounting every answer in the ledger."""
from __future__ import annotations

import random
import time
from typing import ClassVar

from gevent import GreenletExit
from locust import FastHttpUser, task
from locust.exception import StopUser

from chargeback.ledger import NO_ANSWER

from .run import Run, run_of
from .wire import JSON_HEADERS, ledger_status, request_body, usage_of, verdict


class TierUser(FastHttpUser):
    """A simulated user of one tier; subclasses per tier are made from the Plan (users/tiers.py)."""

    abstract = True
    tier: ClassVar[str] = ""
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.run_state: Run = run_of(self.environment)
        slot = self.run_state.slots.claim(self.tier)
        if slot is None:
            raise StopUser()
        stream = slot.stream
        self.slot = slot
        self.path = "/v1/chat/completions" if stream.endpoint == "chat" else "/v1/completions"
        self.body = request_body(stream)
        self.headers = {**JSON_HEADERS, **self.run_state.credentials(slot)}
        self.expect_rejection = stream.credential != "valid"
        self.request_name = f"{slot.user_class} {self.path}"
        self.sent = 0
        self.last_start = 0.0
        self.rng = random.Random(slot.index)

    def wait_time(self) -> float:
        """The pause before the next request, spent in Locust's wait (so a stop never waits for it)."""
        stream = self.slot.stream
        if stream.budget is not None and self.sent >= stream.budget:
            return 0.0
        if stream.requests and self.sent and self.sent % stream.requests == 0:
            return stream.round_gap
        return stream.pattern.delay(self.sent, time.time() - self.last_start, self.rng)

    @task
    def send(self) -> None:
        stream = self.slot.stream
        if stream.budget is not None and self.sent >= stream.budget:
            self.run_state.slots.finish(self.slot)
            raise StopUser()
        self.last_start = time.time()
        answered = False
        try:
            with self.client.post(self.path, data=self.body, headers=self.headers, catch_response=True,
                                  name=self.request_name) as response:
                done = time.time()
                error = getattr(response, "error", None)
                status = ledger_status(response.status_code or 0, response.content, error)
                usage = usage_of(response.content, stream.stream) if 200 <= status < 300 else None
                self.run_state.ledger.record(self.slot.account, self.slot.user_class, self.last_start, done,
                                             status, usage, self.slot.index)
                answered = True
                if status > 0:
                    self.run_state.answered(self.last_start, done)
                problem = verdict(status, self.expect_rejection)
                if problem:
                    response.failure(problem)
                else:
                    response.success()
        except GreenletExit:  # stopped mid-request: the gateway may have counted it, so the ledger keeps it
            if not answered:
                self.run_state.ledger.record(self.slot.account, self.slot.user_class, self.last_start, time.time(),
                                             NO_ANSWER, None, self.slot.index)
            raise
        finally:
            self.sent += 1
