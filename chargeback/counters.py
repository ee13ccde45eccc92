"""Raw counter snapshots and per-user totals: duplicates collapsed, absent series as 0, resets found."""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

# Labels that tell copies of one scrape apart (which monitor or job, which Prometheus replica): series that differ
# only in them are one counter, read twice, so one is kept.
COPY_LABELS = frozenset({"job", "prometheus_replica", "prometheus", "service", "endpoint", "container", "namespace",
                         "__name__"})
# Labels that tell Limitador replicas apart (each pod its own target): their counters are different, so they add up.
REPLICA_LABELS = ("pod", "instance")
Series = list[tuple[dict[str, str], float]]


@dataclass
class Snapshot:
    """Every per-user series of each kind at one instant, as the source served them (no aggregation)."""

    source: str  # the URL read
    at: float
    series: dict[str, Series]
    resets: dict[str, int] = field(default_factory=dict)  # user -> counter resets since the previous snapshot
    covers: tuple[float, float] | None = None  # every call answered by the first moment is in it, and no call
    #                                             sent after the second; None: both are `at`

    @property
    def window(self) -> tuple[float, float]:
        return self.covers or (self.at, self.at)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "at": self.at, "resets": self.resets, "covers": self.covers,
                "series": {kind: [[labels, value] for labels, value in s] for kind, s in self.series.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        series = {kind: [(labels, float(value)) for labels, value in s] for kind, s in data["series"].items()}
        covers = data.get("covers")
        return cls(data["source"], data["at"], series, data.get("resets", {}), tuple(covers) if covers else None)


def counter_identity(labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """What names one counter of one Limitador: the replica serving it (its pod, else its instance) and its own
    labels, without those that only tell copies of a scrape apart."""
    replica = next((labels[name] for name in REPLICA_LABELS if name in labels), "")
    return (("", replica),) + tuple(sorted((k, v) for k, v in labels.items()
                                           if k not in COPY_LABELS and k not in REPLICA_LABELS))


def in_namespace(series: Series, namespace: str | None, label: str = "limitador_namespace") -> Series:
    """The series of one limitador_namespace (all of them when `namespace` is None)."""
    return series if namespace is None else [(labels, v) for labels, v in series if labels.get(label) == namespace]


def namespaces_of(snapshot: Snapshot, users: set[str], user_label: str = "user",
                  label: str = "limitador_namespace") -> set[str]:
    """The limitador_namespace values of the series that carry one of `users`."""
    return {labels[label] for series in snapshot.series.values() for labels, _ in series
            if labels.get(user_label) in users and label in labels}


def deduplicated(series: Series) -> dict[tuple, tuple[dict[str, str], float]]:
    """One value per counter: series that differ only in copy labels are one counter read twice, so the largest is
    kept; series of different replicas stay apart (they add up in `per_user`)."""
    counters: dict[tuple, tuple[dict[str, str], float]] = {}
    for labels, value in series:
        key = counter_identity(labels)
        if key not in counters or value > counters[key][1]:
            counters[key] = (labels, value)
    return counters


def increases(before: Series, after: Series) -> dict[tuple, tuple[dict[str, str], float]]:
    """Per counter: after minus before (absent before = 0); negative when the counter went back (a reset)."""
    old = deduplicated(before)
    return {key: (labels, value - old.get(key, ({}, 0.0))[1]) for key, (labels, value) in deduplicated(after).items()}


def per_user(changes: dict[tuple, tuple[dict[str, str], float]], user_label: str) -> dict[str, float]:
    """Sum the changes of every counter of each user (several models, say)."""
    totals: dict[str, float] = {}
    for labels, change in changes.values():
        user = labels.get(user_label)
        if user is not None:
            totals[user] = totals.get(user, 0.0) + change
    return totals


def groups_seen(series: Series, user_label: str, group_label: str) -> dict[str, set[str | None]]:
    """user -> every group label its series carry (None for a series without one)."""
    seen: dict[str, set[str | None]] = {}
    for labels, _ in series:
        if user_label in labels:
            seen.setdefault(labels[user_label], set()).add(labels.get(group_label))
    return seen


def walk(samples: list[tuple[float, float]], baseline: float | None,
         scrapes: list[float]) -> tuple[float, int, list[tuple[float, float]]]:
    """The increase of one raw counter over its samples, without extrapolation: (increase, restarts, points).

    `baseline` is its value before the first sample (None: born in between, so the first value counts whole).
    A fall, or successful scrapes of its target that lack it (a restarted Limitador drops a series until its
    next increment), is a restart: the value after it counts from 0. `scrapes` are the target's successful
    scrape times, sorted; `points` is the running increase at each sample.
    """
    total, restarts, points = 0.0, 0, []
    previous, previous_t = baseline, None
    for t, value in samples:
        gap = previous_t is not None and bisect.bisect_right(scrapes, previous_t) < bisect.bisect_left(scrapes, t)
        if previous is None:
            total += value
        elif value < previous or gap:
            total += value
            restarts += 1
        else:
            total += value - previous
        previous, previous_t = value, t
        points.append((t, total))
    return total, restarts, points
