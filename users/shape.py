"""Who drives the tier users: a named scenario (a LoadTestShape that runs one simulated user per slot) or Locust's
own controls (users, spawn rate, run time, a user's LoadTestShape; tier weights and --pattern), chosen at start
from the command line or the web UI's form.

The tier user classes are those the locustfiles define: a user's own TierUser subclass for a tier replaces the
generated one; several for one tier share its users.
"""
from __future__ import annotations

from typing import Any

from locust import LoadTestShape
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.user import User

from scenarios import INVALID_CLASS, Scenario, tier_weights

from .base import TierUser
from .options import endless_stream, scenario_of
from .run import run_of


class ScenarioShape(LoadTestShape):
    """Runs the chosen scenario: one simulated user per slot, all at once; stops when the scenario is done (or a
    worker is lost, whose users can never finish)."""

    def __init__(self, classes: TierClasses):
        super().__init__()
        self.classes = classes

    def tick(self) -> tuple[int, float, list] | None:
        environment = self.runner.environment
        run = run_of(environment)
        if run.active and (run.finished() or run.lost_workers()):
            return None
        if run.active:  # the run's slots, made once at its start
            slots = run.slots.slots
        else:
            scenario = scenario_of(environment.parsed_options)
            assert scenario is not None, "the scenario shape runs only with a scenario"
            slots = scenario.slots(run.plan)
        counts: dict[str, int] = {}
        for slot in slots:
            counts[slot.user_class] = counts.get(slot.user_class, 0) + 1
        classes = []
        for tier, count in counts.items():
            share = self.classes.by_tier[tier]
            for i, cls in enumerate(share):  # the tier's simulated users spread over its classes
                cls.fixed_count = count // len(share) + (i < count % len(share))
                classes += [cls] if cls.fixed_count else []
        total = sum(counts.values())
        return total, max(total, 1), classes


class TierClasses:
    """The loaded user classes: per tier the classes that run it, and the others (a user's plain classes)."""

    def __init__(self, loaded: list[type[User]], own_shape: LoadTestShape | None, tiers: list[str], sources: str):
        self.own_shape = own_shape  # a LoadTestShape of the user's locustfile: it drives Locust's controls
        tier_users = [c for c in loaded if issubclass(c, TierUser)]
        self.others = [c for c in loaded if not issubclass(c, TierUser)]
        for cls in tier_users:
            if cls.tier not in tiers and cls.tier != INVALID_CLASS:
                raise ValueError(f"user class {cls.__name__} ({cls.__module__}) is for tier {cls.tier!r}, which the "
                                 f"Plan ({sources}) does not have; tiers: {', '.join(tiers)}")
        self.by_tier: dict[str, list[type[TierUser]]] = {}
        for cls in tier_users:
            own = [c for c in tier_users if c.tier == cls.tier and not c.generated]
            self.by_tier[cls.tier] = own or [cls]
        self.weights = {cls: cls.weight for cls in tier_users}  # as declared
        self.shape = ScenarioShape(self)

    def all(self) -> list[type[User]]:
        return [c for share in self.by_tier.values() for c in share] + self.others

    def for_controls(self, weights: dict[str, int]) -> list[type[User]]:
        """The classes Locust's controls run, each tier's weight shared by its classes (as they declare)."""
        for tier, share in self.by_tier.items():
            for cls in share:
                cls.fixed_count = 0
                cls.weight = weights.get(tier, 0) * self.weights[cls]
        return [c for c in self.all() if c.weight > 0 or c.fixed_count > 0]


def choose_scenario(environment: Environment, name: str) -> Scenario | None:
    """Run `name` (a scenario) or, for "", Locust's controls: sets the options, the shape and the user classes.
    ValueError (one line) for an unknown scenario, one the Plan cannot run, or bad tier weights or pattern."""
    options: Any = environment.parsed_options
    options.scenario = name
    run = run_of(environment)
    classes: TierClasses = run.classes
    scenario = scenario_of(options)
    if isinstance(environment.runner, WorkerRunner):  # it spawns whatever class the master dispatches
        return scenario
    if scenario is not None:
        scenario.slots(run.plan)  # what the Plan cannot run stops here
        environment.user_classes[:] = classes.all()
        classes.shape.runner = environment.runner
        environment.shape_class = classes.shape
        return scenario
    endless_stream(options)  # a bad --pattern stops here
    weights = tier_weights(options.tier_weights, [t for t in classes.by_tier if t != INVALID_CLASS])
    environment.user_classes[:] = classes.for_controls(weights)
    environment.shape_class = classes.own_shape
    return None
