"""Faults the stand-in can inject, so the tests can show each check failing against a gateway that miscounts."""
from __future__ import annotations

from dataclasses import dataclass, field

ONCE_PER_USER = ("over-limit", "token-over-limit", "drop-authorized", "double-count", "drop-tokens", "model-429",
                 "auth-uncounted", "early-reset")
SYNTAX = ("over-limit[:USER], token-over-limit[:USER], drop-authorized[:USER], double-count[:USER], "
          "drop-tokens[:USER], model-429[:USER], auth-uncounted[:USER], early-reset[:USER], fail-open[:USER], "
          "headers-stale[:USER], mislabel:USER=GROUP, "
          "no-group, reset-after:N, forget-after:N")


@dataclass
class Faults:
    """Once (the first request it can, of USER if named): `over-limit` lets a request over the limit through;
    `token-over-limit` lets a request through the token check when its token limit is spent;
    `drop-authorized` leaves an authorized call out of the metrics; `double-count` counts one twice; `drop-tokens`
    leaves a token report out of the metrics; `model-429` makes the model answer an authorized request with an
    OpenAI-style 429 (counted as authorized); `auth-uncounted` answers a 401 or 403 (of USER's key if named) that
    Authorino's counters leave out; `early-reset` makes the limiter forget the request-limit windows of a limited
    request (of USER's) right after its 429, while the rate-limit headers had promised them for longer. Always:
    `fail-open` lets the requests of USER (of everyone without USER) bypass the limiter uncounted, as a gateway whose
    rate-limit call timed out; `headers-stale` serves USER's X-RateLimit-Remaining (everyone's without USER) as it was
    before the request's own hit (not decremented); `mislabel:USER=GROUP` labels
    USER's series with GROUP; `no-group` serves no group label. After N requests reached the limiter, once:
    `reset-after:N` clears counters and metrics (a Limitador restart); `forget-after:N` clears counters only."""

    pending: dict[str, str | None] = field(default_factory=dict)  # kind -> user (None: anyone), until used
    no_group: bool = False
    reset_after: int | None = None
    forget_after: int | None = None
    fail_open: set[str | None] = field(default_factory=set)  # users bypassing the limiter (None: everyone)
    stale_headers: set[str | None] = field(default_factory=set)  # users whose Remaining is not decremented
    mislabel: dict[str, str] = field(default_factory=dict)  # user -> group label served instead of the Plan's

    @classmethod
    def parse(cls, specs: list[str]) -> Faults:
        faults = cls()
        for spec in specs:
            kind, _, argument = spec.partition(":")
            user, _, group = argument.partition("=")
            if kind in ONCE_PER_USER:
                faults.pending[kind] = argument or None
            elif kind == "fail-open":
                faults.fail_open.add(argument or None)
            elif kind == "headers-stale":
                faults.stale_headers.add(argument or None)
            elif kind == "mislabel" and user and group:
                faults.mislabel[user] = group
            elif kind == "no-group" and not argument:
                faults.no_group = True
            elif kind == "reset-after" and argument.isdigit():
                faults.reset_after = int(argument)
            elif kind == "forget-after" and argument.isdigit():
                faults.forget_after = int(argument)
            else:
                raise ValueError(f"--fault {spec!r}: expected one of {SYNTAX}")
        return faults

    def __bool__(self) -> bool:
        return bool(self.pending or self.no_group or self.reset_after is not None or self.forget_after is not None
                    or self.fail_open or self.mislabel or self.stale_headers)

    def fails_open(self, user: str) -> bool:
        """Whether this user's requests bypass the limiter."""
        return None in self.fail_open or user in self.fail_open

    def stale(self, user: str) -> bool:
        """Whether this user's X-RateLimit-Remaining is served before the request's own hit."""
        return None in self.stale_headers or user in self.stale_headers

    def take(self, kind: str, user: str) -> bool:
        """True once: the first time `kind` is pending for this user (or for anyone)."""
        if kind in self.pending and self.pending[kind] in (None, user):
            del self.pending[kind]
            return True
        return False
