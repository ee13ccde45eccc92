"""Limitador's rate-limit headers as a second witness of each window.

With `rateLimitHeaders: DRAFT_VERSION_03` every answer of a RateLimitPolicy check (200 and 429) carries
`X-RateLimit-Limit` (`max, max;w=secs;name="..."` per counter, the most restrictive first), `X-RateLimit-Remaining`
(that counter's room after this request: a 200 has used its unit) and `X-RateLimit-Reset` (whole seconds, truncated,
until that counter's window ends). A counter's window ends at a fixed moment and its room only goes down until then,
whatever else hits it (other clients, requests without an answer), so per user and request limit:

- every answer lists the limit with the policy's numbers;
- an answer that got through has used a unit: its counter's remaining is below the limit;
- an answer certainly decided after another (sent after that one's answer came) and before that one's window can
  have ended shows at most that one's remaining, one less if it got through (a 200 after "0 left" is a 200 in a full
  window; more left is a window reset early); where both describe the counter, their window ends agree.

Requests in flight together may be decided in any order: only certainly ordered pairs are compared. A window
ends within [sent + Reset, answered + Reset + 1) of the answer that reported it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .expectations import EDGE
from .ledger import ANY_SENDER, AUTHORIZED, NO_HEADER, Account, outcomes_of
from .plan import Rate
from .verdicts import Rows, Verdict, clock, fails, holds, not_applicable, undecided
from .verify import UserCheck, Verification

LISTED = re.compile(r'\s*(\d+)\s*;\s*w=(\d+)(?:\s*;\s*name="([^"]*)")?\s*')
PROBLEMS_LISTED = 10  # problems a failure's table shows
BLOCK = 64  # answers compared at once against the earlier ones


@dataclass(frozen=True)
class Listed:
    """One counter of an X-RateLimit-Limit: `max;w=seconds;name="..."`."""

    max_value: int
    seconds: int
    name: str | None

    def __str__(self) -> str:
        return f"{self.name or '(unnamed)'} ({self.max_value} per {self.seconds} s)"

    def describes(self, rate: Rate) -> bool:
        """The counter of `rate` (by name; by window where the limit is unnamed)."""
        return self.seconds == int(rate.window) and self.name in (rate.limit_name, None)


def parse_limit(text: str) -> tuple[Listed, ...] | None:
    """The counters an X-RateLimit-Limit lists, the one Remaining and Reset describe first; None if unreadable."""
    first, _, rest = text.partition(",")
    entries = rest.split(",") if rest else []
    parsed = [LISTED.fullmatch(entry) for entry in entries]
    if not first.strip().isdigit() or not parsed or not all(parsed):
        return None
    listed = tuple(Listed(int(m[1]), int(m[2]), m[3]) for m in parsed if m)
    return listed if listed[0].max_value == int(first) else None


@dataclass(frozen=True)
class HeaderAnswers:
    """One identity's answers that carried rate-limit headers, in its timeline's order (send order)."""

    position: np.ndarray  # 1-based, in the identity's timeline
    sent: np.ndarray
    done: np.ndarray
    sender: np.ndarray
    authorized: np.ndarray  # got past the limiter (a 200, a 5xx, the model's 429)
    status: np.ndarray
    remaining: np.ndarray
    reset: np.ndarray  # NO_HEADER when the answer carried none
    limit: np.ndarray  # index into `texts`
    texts: list[str]


def header_answers(account: Account) -> HeaderAnswers | None:
    """The answers of `account` that carried rate-limit headers (None when none did), ordered as its timeline."""
    headers = account.rate_headers
    if headers is None:
        return None
    sent, done, status, sender = (np.frombuffer(c, dtype=c.typecode) for c in account.columns[:4])
    rows = len(sent)
    padded = [np.concatenate((np.frombuffer(c, dtype=c.typecode)[:rows],
                              np.full(max(rows - len(c), 0), NO_HEADER, dtype=c.typecode)))
              for c in (headers.remaining, headers.reset, headers.limit)]
    order = account.send_order()
    sent, done, status, sender = sent[order], done[order], status[order], sender[order]
    remaining, reset, limit = (c[order] for c in padded)
    keep = limit != NO_HEADER
    if not keep.any():
        return None
    authorized = outcomes_of(sent, done, status) == AUTHORIZED
    return HeaderAnswers(np.flatnonzero(keep) + 1, sent[keep], done[keep], sender[keep], authorized[keep],
                         status[keep], remaining[keep].astype(np.int64), reset[keep].astype(np.int64),
                         limit[keep].astype(np.int64), list(headers.limits))


@dataclass(frozen=True)
class Problem:
    """One contradiction: at `index` of the header answers; `ordering` when a restart could explain it."""

    index: int
    title: str
    row: dict[str, object]
    ordering: bool


def _row(check: UserCheck, rate: Rate, a: HeaderAnswers, i: int, against: str) -> dict[str, object]:
    reset = int(a.reset[i])
    return {"user": check.user, "limit": rate.label, "request": int(a.position[i]), "sent": clock(float(a.sent[i])),
            "answer": int(a.status[i]), "remaining": int(a.remaining[i]),
            "reset": reset if reset != NO_HEADER else "-", "against": against}


def _listing(check: UserCheck, rate: Rate, a: HeaderAnswers, known: set[tuple[str, int]]) -> list[Problem]:
    """Each X-RateLimit-Limit of the user's answers (at its first use) lists `rate` with the policy's numbers; the
    user's first rate's case also names counters no limit of the policy has."""
    problems = []
    for index, text in enumerate(a.texts):
        uses = np.flatnonzero(a.limit == index)
        if not len(uses):
            continue
        i = int(uses[0])
        where = f"{check.user}: request {a.position[i]} (sent {clock(float(a.sent[i]))}) has X-RateLimit-Limit `{text}`"
        listed = parse_limit(text)
        if listed is None:
            problems.append(Problem(i, f"{where}, which cannot be read", _row(check, rate, a, i, "-"), False))
            continue
        mine = [e for e in listed if e.describes(rate)]
        same_name = [e for e in listed if e.name == rate.limit_name]
        if not mine:
            also = f" (it lists {', '.join(map(str, same_name))})" if same_name else ""
            problems.append(Problem(i, f"{where}: it does not list {rate.label}{also}, which the policy applies to "
                                       "the user", _row(check, rate, a, i, "-"), False))
        elif mine[0].max_value != rate.limit:
            problems.append(Problem(i, f"{where}: it lists {mine[0]}, but the policy says {rate.label}",
                                    _row(check, rate, a, i, "-"), False))
        if check.rates and rate == check.rates[0]:
            for entry in listed:
                if (entry.name is not None and (entry.name, entry.seconds) not in known
                        and all(entry.name != r.limit_name for r in check.rates)):  # those are named above
                    problems.append(Problem(i, f"{where}: it lists {entry}, a limit the policy does not have",
                                            _row(check, rate, a, i, "-"), False))
    return problems


def _ordering(check: UserCheck, rate: Rate, a: HeaderAnswers) -> list[Problem]:
    """The answers' remaining and window ends against one another (see the module's docstring)."""
    listed = [parse_limit(t) for t in a.texts]
    reports = np.array([bool(l) and l[0].describes(rate) for l in listed])[a.limit]  # this counter first
    lists = np.array([bool(l) and any(e.describes(rate) for e in l) for l in listed])[a.limit]
    tops = np.array([l[0].max_value if l else 0 for l in listed])[a.limit]
    problems = []
    used = a.authorized.astype(np.int64)
    for i in np.flatnonzero(reports & (a.remaining > tops - used)).tolist():
        said = ("its own hit was not counted" if a.authorized[i] and a.remaining[i] == tops[i]
                else f"more than the limit's {tops[i]}")
        problems.append(Problem(i, f"{check.user}: request {a.position[i]} (sent {clock(float(a.sent[i]))}) "
                                   f"{'got through' if a.authorized[i] else 'was limited'}, but its "
                                   f"X-RateLimit-Remaining says {a.remaining[i]} of {rate.label} left: {said}",
                                _row(check, rate, a, i, "-"), False))
    witnesses = np.flatnonzero(reports & (a.reset != NO_HEADER))  # they say until when their window lasts
    later = np.flatnonzero(lists)
    if not len(witnesses) or not len(later):
        return problems
    w_sent, w_done, w_sender = a.sent[witnesses], a.done[witnesses], a.sender[witnesses]
    w_reset, w_left = a.reset[witnesses], a.remaining[witnesses]
    lasts = w_sent + w_reset  # the window lasts at least until then
    for start in range(0, len(later), BLOCK):
        b = later[start:start + BLOCK]
        lo = int(np.searchsorted(w_sent, a.done[b].min() - w_reset.max(), side="right"))
        hi = int(np.searchsorted(w_sent, a.sent[b].max(), side="right"))
        w = np.arange(lo, hi)  # the earlier answers whose window may hold some of these
        w = w[(lasts[w] > a.done[b].min()) & (w_done[w] <= a.sent[b].max())]
        if not len(w):
            continue
        same = (w_sender[w][None, :] == a.sender[b][:, None]) & (a.sender[b][:, None] != ANY_SENDER)
        margin = np.where(same, 0.0, EDGE)
        pair = ((w_done[w][None, :] + margin <= a.sent[b][:, None])  # that answer came before this was sent
                & (a.done[b][:, None] + margin < lasts[w][None, :])  # and this was decided in its window
                & (b[:, None] != witnesses[w][None, :]))
        more = pair & (a.remaining[b][:, None] > w_left[w][None, :] - used[b][:, None])
        ends_b = (a.sent[b] + a.reset[b], a.done[b] + a.reset[b] + 1)
        ends_w = (lasts[w], w_done[w] + w_reset[w] + 1)
        moved = (pair & (reports[b] & (a.reset[b] != NO_HEADER))[:, None]
                 & ((ends_b[0][:, None] >= ends_w[1][None, :] + margin)
                    | (ends_w[0][None, :] >= ends_b[1][:, None] + margin)))
        for row in np.flatnonzero((more | moved).any(axis=1)).tolist():
            cols = np.flatnonzero(more[row])  # against the earlier answer that left the least room, if any
            col = int(cols[np.argmin(w_left[w][cols])]) if len(cols) else int(np.flatnonzero(moved[row])[0])
            problems.append(_contradiction(check, rate, a, int(b[row]), int(witnesses[w[col]]), bool(len(cols))))
        if len(problems) > PROBLEMS_LISTED:
            break
    return problems


def _contradiction(check: UserCheck, rate: Rate, a: HeaderAnswers, i: int, j: int, more: bool) -> Problem:
    """Answer i contradicts the earlier answer j about `rate`'s window."""
    this = f"{check.user}: request {a.position[i]} (sent {clock(float(a.sent[i]))})"
    that = (f"request {a.position[j]} (answered {clock(float(a.done[j]))}, before it was sent) had said "
            f"{a.remaining[j]} left in a window lasting until at least {clock(float(a.sent[j] + a.reset[j]))}")
    against = f"request {a.position[j]}: {a.remaining[j]} left, reset {a.reset[j]}"
    if more and a.authorized[i] and a.remaining[j] == 0:
        title = f"{this} got through, but {that}: {rate.label} was already full"
    elif more:
        most = a.remaining[j] - int(a.authorized[i])
        title = (f"{this} says {a.remaining[i]} of {rate.label} left, but {that}, so at most {most} could be: the "
                 "window reset early, or the remaining was not counted down")
    else:
        title = (f"{this} says {rate.label}'s window ends in {a.reset[i]} s, but {that}: the same window, yet its "
                 "end moved (the window reset early)")
    return Problem(i, title, _row(check, rate, a, i, against), True)


def rate_limit_headers_agree(check: UserCheck, rate: Rate, v: Verification) -> Verdict:
    """The user's rate-limit headers list `rate` as the policy has it and tell one consistent story of its
    windows with the answers."""
    if not any(account.rate_headers is not None for account in v.record.ledger.accounts.values()):
        return not_applicable("no answer of the run carried rate-limit headers (Limitador's rateLimitHeaders is not "
                              "DRAFT_VERSION_03)")
    answers = header_answers(check.client)
    if answers is None:
        return undecided(f"{check.user}: none of its answers carried rate-limit headers")
    known = {(limit.name, int(r.window)) for limit in v.record.plan.limits if limit.kind == "requests"
             for r in limit.rates}
    problems = sorted(_listing(check, rate, answers, known) + _ordering(check, rate, answers),
                      key=lambda p: p.index)
    if not problems:
        return holds()
    if check.resets and all(p.ordering for p in problems):
        return undecided(f"{check.user}: {len(problems)} answer(s) contradict earlier ones about {rate.label}, but "
                         f"its counters reset {check.resets} time(s) during the run (a Limitador restart forgets "
                         f"windows); the first: {problems[0].title}")
    rows: Rows = [p.row for p in problems[:PROBLEMS_LISTED]]
    return fails(problems[0].title + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""), rows)
