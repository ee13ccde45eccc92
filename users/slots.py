"""Slots between processes: the master (or a local runner) hands out the slots; a worker claims one per simulated
user by message, saying which Plan it loaded (its digest), so a worker with another Plan gets none.

A scenario's slots are fixed; with Locust's controls they are made on claim, each the next identity of its tier
round-robin (`rotation`), all with one stream."""
from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from scenarios import Slot, Stream

log = logging.getLogger("chargeback")
CLAIM_WAIT = 30.0  # seconds a worker waits for the master's answer to a claim


class SlotBook:
    """Who runs which slot, and which slots are done. `open` while the run hands out slots."""

    def __init__(self, plan_digest: str, on_done: Callable[[], None],
                 on_other_plan: Callable[[str, str], None]):
        self.plan_digest = plan_digest
        self.on_done = on_done  # a slot's budget was spent
        self.on_other_plan = on_other_plan  # (worker, its digest): a worker loaded another Plan
        self.environment: Environment | None = None
        self.slots: list[Slot] = []
        self.rotation: dict[str, list[str]] = {}  # Locust's controls: tier -> its identities
        self.endless: Stream | None = None  # Locust's controls: the stream of every slot
        self._taken: dict[str, int] = {}  # Locust's controls: slots made per tier
        self.claimed: dict[int, str] = {}  # slot index -> the worker that runs it ("" locally)
        self._unclaimed: dict[str, Iterator[Slot]] = {}  # a scenario's slots per user class, in order
        self.done: set[int] = set()
        self.open = False
        self._requests = itertools.count()
        self._pending: dict[int, AsyncResult] = {}

    def register(self, environment: Environment) -> None:
        self.environment = environment
        runner = environment.runner
        if isinstance(runner, WorkerRunner):
            runner.register_message("chargeback_slot", self._on_slot)
        elif isinstance(runner, MasterRunner):
            runner.register_message("chargeback_claim", self._on_claim)
            runner.register_message("chargeback_done", lambda msg, **_: self._mark_done(msg.data))

    @property
    def _worker(self) -> bool:
        return self.environment is not None and isinstance(self.environment.runner, WorkerRunner)

    def begin(self, slots: list[Slot], rotation: dict[str, list[str]] | None = None,
              endless: Stream | None = None) -> None:
        """A scenario's `slots`; or, with Locust's controls, slots made on claim from `rotation` with `endless`."""
        self.slots, self.claimed, self.done = slots, {}, set()
        by_class: dict[str, list[Slot]] = {}
        for slot in slots:
            by_class.setdefault(slot.user_class, []).append(slot)
        self._unclaimed = {user_class: iter(share) for user_class, share in by_class.items()}
        self.rotation, self.endless, self._taken = rotation or {}, endless, {}

    @property
    def all_done(self) -> bool:
        return len(self.done) == len(self.slots)

    def accounts_of(self, workers: list[str]) -> list[str]:
        """The identities the slots of these workers send as."""
        return sorted({self.slots[i].account for i, worker in self.claimed.items() if worker in workers})

    def claim(self, user_class: str) -> Slot | None:
        """The next free slot of this user class (asked of the master from a worker); None once the run is over."""
        if not self._worker:
            return self._assign(user_class, "")
        request = next(self._requests)
        result = self._pending[request] = AsyncResult()
        self.environment.runner.send_message("chargeback_claim", {"user_class": user_class, "request": request,
                                                                  "plan": self.plan_digest})
        try:
            answer = result.get(timeout=CLAIM_WAIT)
        except gevent.Timeout:
            log.error("the master did not assign a %s slot within %g s", user_class, CLAIM_WAIT)
            return None
        finally:
            self._pending.pop(request, None)
        if answer is None:
            return None
        index, account = answer
        return self.slots[index] if self.endless is None else Slot(index, user_class, account, self.endless)

    def finish(self, slot: Slot) -> None:
        """A slot's budget is spent."""
        if self._worker:
            self.environment.runner.send_message("chargeback_done", slot.index)
        else:
            self._mark_done(slot.index)

    def _assign(self, user_class: str, worker: str) -> Slot | None:
        if not self.open:
            return None
        if self.endless is not None:
            return self._make(user_class, worker)
        slot = next(self._unclaimed.get(user_class, iter(())), None)
        if slot is not None:
            self.claimed[slot.index] = worker
        return slot

    def _make(self, user_class: str, worker: str) -> Slot | None:
        """A new slot with the next identity of the tier, round-robin."""
        accounts = self.rotation.get(user_class)
        if not accounts:
            return None
        taken = self._taken[user_class] = self._taken.get(user_class, -1) + 1
        slot = Slot(len(self.slots), user_class, accounts[taken % len(accounts)], self.endless)
        self.slots.append(slot)
        self.claimed[slot.index] = worker
        return slot

    def _mark_done(self, index: int) -> None:
        self.done.add(index)
        self.on_done()

    def _on_claim(self, environment: Environment, msg: Any, **_: Any) -> None:
        digest = msg.data.get("plan")
        if digest != self.plan_digest:
            self.on_other_plan(msg.node_id, str(digest))
            slot = None
        else:
            slot = self._assign(msg.data["user_class"], msg.node_id)
        environment.runner.send_message("chargeback_slot", {
            "request": msg.data["request"], "slot": None if slot is None else (slot.index, slot.account)},
            client_id=msg.node_id)

    def _on_slot(self, environment: Environment, msg: Any, **_: Any) -> None:
        pending = self._pending.get(msg.data["request"])
        if pending is not None:
            pending.set(msg.data["slot"])
