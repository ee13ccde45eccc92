"""The token-limit model: what Limitador's token check could have answered each request of one identity.

A TokenRateLimitPolicy checks before the request at cost 0 (checked as 1: limited iff the tokens used in the window
are at least the limit) and opens no window; after the answer the gateway reports the usage's total tokens (0
charged as 1), and the first report after a window expired opens the next one at that moment. The request that
crosses the limit is allowed; the next is limited. A check lands somewhere between the request's send and its
answer. The gateway sends a report before it passes the end of the answer on, so a report lands at most
REPORT_EARLY before the client has the answer and at most REPORT_LATE after. A request is classified as surely
allowed, surely limited, or either (reports of requests in flight at once may land before or after its check, a
window may expire while it is in flight, or what was open before the run is not known).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .expectations import EDGE, Explanation, Overshoot, Prediction, Prior, Unexplained, explain_overshoot
from .ledger import AUTHORIZED, DECIDED, LIMITED, MAYBE, Timeline
from .plan import Rate

REPORT_EARLY = 0.05  # seconds a report may land at the limiter before the client has the answer
REPORT_LATE = EDGE  # and after it
REPORT_SLACK = REPORT_EARLY + REPORT_LATE
ALLOW, LIMIT, EITHER = "a", "l", "?"
TOKEN_OR_REQUEST = "T"  # the outcome of a 429 the token check may have given: the request limits' model leaves it open


@dataclass(frozen=True)
class _Window:
    opened: float  # when the client had the answer whose report opened it
    times: np.ndarray  # its reports, in order
    used: np.ndarray  # tokens used after each of them (cumulative)
    members: np.ndarray  # the reports' positions in the timeline


def reports_of(timeline: Timeline) -> np.ndarray:
    """The positions of the requests whose answer reported usage (a report reached the limiter), by answer time."""
    reported = np.flatnonzero((timeline.tokens >= 0) & (timeline.outcome == AUTHORIZED))
    return reported[np.argsort(timeline.done[reported], kind="stable")]


def token_checks(timeline: Timeline, rate: Rate, known_from: float = float("-inf")) -> np.ndarray:
    """ALLOW, LIMIT or EITHER per request of `timeline` (the requests that reached the limiter) for one token rate.
    `known_from`: from when no window opened before the run can still be open (-inf: none was open)."""
    n = len(timeline)
    classes = np.full(n, EITHER, dtype="<U1")
    sent, done = timeline.sent, timeline.done
    charged = np.maximum(timeline.tokens.astype(np.int64), 1)
    order = reports_of(timeline)
    times = done[order]
    windows, unknown = _windows(times, charged[order], order, rate, known_from)
    used_max = np.zeros(n, dtype=np.int64)
    used_min = np.zeros(n, dtype=np.int64)
    for window in windows:
        start, end = window.opened - REPORT_EARLY, window.opened + REPORT_LATE + rate.window
        overlaps = (done >= start) & (sent < end)
        before = np.searchsorted(window.times, done + REPORT_EARLY, side="left")  # may have landed before the check
        mine = np.zeros(n, dtype=np.int64)
        mine[window.members] = charged[window.members]
        seen = np.where(before > 0, window.used[np.maximum(before - 1, 0)], 0) - mine
        used_max = np.where(overlaps, np.maximum(used_max, seen), used_max)
        inside = (sent >= window.opened + REPORT_LATE) & (done < window.opened - REPORT_EARLY + rate.window)
        surely = np.searchsorted(window.times, sent - REPORT_LATE, side="right")  # landed before any check time
        certain = np.where(surely > 0, window.used[np.maximum(surely - 1, 0)], 0)
        used_min = np.where(inside, np.maximum(used_min, certain), used_min)
    classes[used_max < rate.limit] = ALLOW
    classes[used_min >= rate.limit] = LIMIT
    if unknown:  # where the windows are not known, any window holding the check began a window before it at most
        used = np.concatenate(([0], np.cumsum(charged[order])))
        recent = (used[np.searchsorted(times, done + REPORT_EARLY, side="left")]
                  - used[np.searchsorted(times, sent - rate.window - REPORT_SLACK, side="right")])
        recent[order] -= charged[order]  # a request's own report comes after its check
        for lo, hi in unknown:
            span = (done >= lo) & (sent < hi)
            classes[span] = EITHER if lo == float("-inf") else np.where(recent[span] < rate.limit, ALLOW, EITHER)
    return classes


def _windows(times: np.ndarray, charges: np.ndarray, order: np.ndarray, rate: Rate,
             known_from: float) -> tuple[list[_Window], list[tuple[float, float]]]:
    """The windows the reports (answered at `times`, charging `charges`, at positions `order`) opened, and the spans
    in which what was open is not known (a report too near a window's expiry to say whether it opened the next, or
    a window of earlier traffic): a span ends where no report came for a whole window."""
    windows: list[_Window] = []
    unknown: list[tuple[float, float]] = []
    lost = float("-inf") if np.isfinite(known_from) else None  # since when the state is not known
    previous = float("-inf")  # the latest report while it is not
    i = 0
    while i < len(times):
        if lost is not None:
            quiet = max(previous + rate.window + REPORT_SLACK, known_from)
            if times[i] < quiet:
                previous, i = float(times[i]), i + 1
                continue
            unknown.append((lost, quiet))  # every window had expired: this report opens a fresh one
            lost = None
        expiry = float(times[i]) + rate.window
        j = max(int(np.searchsorted(times, expiry - REPORT_SLACK, side="left")), i + 1)  # surely inside
        windows.append(_Window(float(times[i]), times[i:j], np.cumsum(charges[i:j]), order[i:j]))
        if j < len(times) and times[j] < expiry + REPORT_SLACK:  # too near the expiry to tell
            lost, previous, i = expiry - REPORT_SLACK, float(times[j]), j + 1
        else:
            i = j
    if lost is not None:
        unknown.append((lost, float("inf")))
    return windows, unknown


def combined(classes: list[np.ndarray], n: int) -> np.ndarray:
    """One answer per request over several token rates: limited if one must limit, allowed if all must allow."""
    if not classes:
        return np.full(n, ALLOW, dtype="<U1")
    every = np.stack(classes)
    return np.where((every == LIMIT).any(axis=0), LIMIT, np.where((every == ALLOW).all(axis=0), ALLOW, EITHER))


def with_token_calls(prediction: Prediction, requests: Timeline, classes: np.ndarray,
                     request_limits: bool) -> Prediction:
    """What the counters should count when a token limit applies. Alone, its check is the one limiter call: the
    model's answers. Beside request limits it is a second call, made after the request limits authorized one
    (`prediction` is theirs), whose answers are the client's: each 200 passed it, and a 429 may be its own."""
    outcome = requests.outcome
    unanswered = np.isin(outcome, (DECIDED, MAYBE))
    if not request_limits:
        sure = outcome != MAYBE
        return Prediction((int(np.count_nonzero((classes == ALLOW) & sure)), int(np.count_nonzero(classes != LIMIT))),
                          (int(np.count_nonzero((classes == LIMIT) & sure)), int(np.count_nonzero(classes != ALLOW))),
                          why_range="a token check the reports of requests in flight at once leave open, or a "
                                    "request without an answer")
    passed, open_ = int(np.count_nonzero(outcome == AUTHORIZED)), int(np.count_nonzero(unanswered))
    token_429 = int(np.count_nonzero((outcome != AUTHORIZED) & (classes != ALLOW)))
    a_lo, a_hi = prediction.authorized
    l_lo, l_hi = prediction.limited
    # the token checks are the request limits' authorized calls; those the client saw pass were not limited
    limited = (l_lo + max(a_lo - passed - open_, 0), l_hi + min(max(a_hi - passed, 0), token_429))
    return Prediction((a_lo + passed, a_hi + passed + open_), limited, prediction.modelled,
                      why_range=f"{prediction.why_range}; a 429 may be the token limit's, after the request limits "
                                "counted the request authorized")


def explain_with_tokens(requests: Timeline, rates: list[Rate], prior: Prior, classes: np.ndarray,
                        token_rates: list[Rate]) -> tuple[Explanation, tuple[Overshoot, ...]]:
    """Whether the answers fit the token model (no 200 the token check had to limit, no 429 it had to allow and the
    request limits could not give) and, with request limits, their window model (its overshoots too), a 429 the
    token check may have given being free for them."""
    outcome = requests.outcome
    for wrong, through in (((outcome == AUTHORIZED) & (classes == LIMIT), True),
                           ((outcome == LIMITED) & (classes == ALLOW), False)):
        if not rates or through:
            hits = np.flatnonzero(wrong)
            if hits.size:
                at = int(hits[0])
                sent = float(requests.sent[at])
                return Explanation(False, Unexplained(at + 1, at + 1, (sent, sent), int(through), int(not through),
                                                      (int(not through),) * 2,
                                                      tuple(r.label for r in token_rates) if through else ())), ()
    if not rates:
        return Explanation(True), ()
    free = (outcome == LIMITED) & (classes != ALLOW)
    relaxed = Timeline(requests.sent, requests.done, np.where(free, TOKEN_OR_REQUEST, outcome), requests.sender,
                       requests.tokens)
    return explain_overshoot(relaxed, rates, prior)
