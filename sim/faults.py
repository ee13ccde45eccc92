"""Faults the stand-in can inject, so the tests can show each check failing against a gateway that miscounts."""
from __future__ import annotations

from dataclasses import dataclass, field

ONCE_PER_USER = ("over-limit", "drop-authorized", "double-count", "drop-tokens")


@dataclass
class Faults:
    """`over-limit[:USER]` lets one request over the limit through; `drop-authorized[:USER]` leaves one authorized
    call out of the metrics; `double-count[:USER]` counts one twice; `drop-tokens[:USER]` leaves one token report
    out of the metrics; `no-group` serves no group label;
    `reset-after:N` resets counters and metrics (as a Limitador restart does) after N requests reached the limiter.
    A fault naming no user applies to the first request it can."""

    pending: dict[str, str | None] = field(default_factory=dict)  # kind -> user (None: anyone), until used
    no_group: bool = False
    reset_after: int | None = None

    @classmethod
    def parse(cls, specs: list[str]) -> "Faults":
        faults = cls()
        for spec in specs:
            kind, _, argument = spec.partition(":")
            if kind in ONCE_PER_USER:
                faults.pending[kind] = argument or None
            elif kind == "no-group" and not argument:
                faults.no_group = True
            elif kind == "reset-after" and argument.isdigit():
                faults.reset_after = int(argument)
            else:
                raise ValueError(f"--fault {spec!r}: expected one of over-limit[:USER], drop-authorized[:USER], "
                                 "double-count[:USER], drop-tokens[:USER], no-group, reset-after:N")
        return faults

    def __bool__(self) -> bool:
        return bool(self.pending) or self.no_group or self.reset_after is not None

    def take(self, kind: str, user: str) -> bool:
        """True once: the first time `kind` is pending for this user (or for anyone)."""
        if kind in self.pending and self.pending[kind] in (None, user):
            del self.pending[kind]
            return True
        return False
