"""The one table a failing check prints: user, group, client count, server count, expected, difference."""
from __future__ import annotations

import time
from typing import NoReturn

import pytest

from chargeback.verify import UserCheck, format_table


def clock(moment: float) -> str:
    """An epoch time as the checks print it (local time, milliseconds)."""
    return time.strftime("%H:%M:%S", time.localtime(moment)) + f".{int(moment * 1000) % 1000:03d}"


def row(check: UserCheck, what: str, client: int, server: int, expected: str = "") -> dict[str, object]:
    return {"user": check.user, "group": check.group, "counter": what, "client": client, "server": server,
            "expected": expected or "-", "difference": server - client}


def require(condition: bool, title: str, rows: list[dict[str, object]] | None = None) -> None:
    """Fail the check with the title and the table only (no traceback) unless `condition` holds."""
    if not condition:
        pytest.fail(f"{title}\n{format_table(rows)}" if rows else title, pytrace=False)


def undecided(why: str) -> NoReturn:
    """The third answer: the check cannot be decided (a skip that says why)."""
    pytest.skip(f"cannot decide: {why}")
