"""The checks' predicates: each takes what `verify` put side by side and returns a Verdict: it holds, it fails
(a title naming user, group, limit and numbers, and a table), it cannot be decided (saying why), or it does not
apply to this run. The pytest plugin turns a Verdict into a pass, a failure or a skip; the check files call these."""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .ledger import AUTHORIZED, DECIDED, LIMITED, NO_ANSWER
from .plan import Rate
from .verify import GroupCount, UserCheck, Verification
from .witness import REJECTIONS, client_rejections, expected_rejections

HOLDS, FAILS, UNDECIDED, NOT_APPLICABLE = "holds", "fails", "cannot decide", "not applicable"
Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Verdict:
    state: str  # HOLDS | FAILS | UNDECIDED | NOT_APPLICABLE
    title: str = ""
    rows: Rows = field(default_factory=list)
    note: str = ""  # what a holding verdict lets pass and why (an overshoot the requests in flight explain)

    @property
    def holds(self) -> bool:
        return self.state == HOLDS


def holds(note: str = "") -> Verdict:
    return Verdict(HOLDS, note=note)


def fails(title: str, rows: Rows | None = None) -> Verdict:
    return Verdict(FAILS, title, rows or [])


def undecided(why: str) -> Verdict:
    return Verdict(UNDECIDED, f"cannot decide: {why}")


def not_applicable(why: str) -> Verdict:
    return Verdict(NOT_APPLICABLE, why)


def require(condition: bool, title: str, rows: Rows | None = None) -> Verdict:
    """Holds when `condition` does; fails with the title and table otherwise."""
    return holds() if condition else fails(title, rows)


def first_failure(*verdicts: Verdict) -> Verdict:
    """The first verdict that does not hold, else one that holds."""
    return next((v for v in verdicts if not v.holds), holds())


def clock(moment: float) -> str:
    """An epoch time as the checks print it (local time, milliseconds)."""
    return time.strftime("%H:%M:%S", time.localtime(moment)) + f".{int(moment * 1000) % 1000:03d}"


def span(bounds: tuple[int, int]) -> str:
    return str(bounds[0]) if bounds[0] == bounds[1] else f"{bounds[0]}..{bounds[1]}"


def row(check: UserCheck, what: str, client: int, server: int, expected: str = "") -> dict[str, object]:
    return {"user": check.user, "group": check.group, "counter": what, "client": client, "server": server,
            "expected": expected or "-", "difference": server - client}


# --- evidence: no pass without traffic that reached the limiter --------------------------------------------------
def gateway_answered(v: Verification) -> Verdict:
    sent = sum(c.client.sent for c in v.users.values())
    answered = sum(int(np.count_nonzero(c.client.statuses() > NO_ANSWER)) for c in v.users.values())
    return first_failure(
        require(sent > 0, "the run sent no request: there is nothing to verify"),
        require(answered > 0, f"none of the run's {sent} requests got an answer: the gateway at "
                              f"{v.record.meta.get('gateway_url')} was unreachable"))


def valid_keys_reached_the_limiter(v: Verification) -> Verdict:
    plan = v.record.plan
    valid = [c for u, c in sorted(v.users.items())
             if c.client.sent and (identity := plan.identity(u)) is not None and identity.valid]
    refused = [c.user for c in valid if (c.client.statuses() == 401).all()]
    if refused:
        return fails(f"every request of {', '.join(refused)} got 401: the keys in the manifests "
                     f"({', '.join(plan.sources)}) are not the gateway's")
    reached = sum(int(np.isin(c.client.timeline().outcome, (AUTHORIZED, LIMITED, DECIDED)).sum()) for c in valid)
    statuses = Counter(s for c in valid for s in c.client.statuses().tolist())
    seen = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    return require(not valid or reached > 0,
                   f"no request of the Plan's valid identities reached the limiter (statuses: {seen})")


# --- reconciliation: the server's counters rose by what the client saw ---------------------------------------------
def _no_reset(check: UserCheck, rows: Rows) -> Verdict:
    return require(not check.resets, f"{check.user}: {check.resets} counter(s) reset between the snapshots; "
                                     "the server's count cannot be compared", rows)


def why_different(check: UserCheck) -> str:
    """The cause a mismatch points at: calls the run did not send, calls not counted, or another split."""
    low, high = check.counted.total
    server = check.server_authorized + check.server_limited
    if server > high:
        when = f"between {clock(check.foreign[0])} and {clock(check.foreign[1])}" if check.foreign else "during the run"
        return (f"{check.user}: the server counted {server - high} call(s) the run did not send, {when}: another "
                "client using this key, or the gateway counting calls twice")
    if server < low:
        return (f"{check.user}: {low - server} call(s) that reached the limiter were not counted (the gateway "
                "failing open, or a dropped increment)")
    return f"{check.user}: the server counted authorized and limited calls differently from the client's answers"


def user_counters_match_the_ledger(check: UserCheck) -> Verdict:
    rows = [row(check, "authorized", check.client.authorized, check.server_authorized,
                check.counted.expected("authorized")),
            row(check, "limited", check.client.limited, check.server_limited, check.counted.expected("limited"))]
    return first_failure(_no_reset(check, rows),
                         require(check.counted.allows(check.server_authorized, check.server_limited),
                                 why_different(check), rows))


def billed_under_the_plans_group(check: UserCheck) -> Verdict:
    labels = sorted(g for g in check.billed if g is not None)
    expected = " or ".join(sorted(check.allowed_groups))
    return first_failure(
        require(len(labels) <= 1, f"{check.user}: billed under several groups: {' and '.join(labels)}; the Plan "
                                  f"puts the user in {expected}"),
        require(not labels or labels[0] in check.allowed_groups,
                f"{check.user}: billed under group {labels[0] if labels else ''}, but the Plan puts the user in "
                f"{expected}"),
        require(None not in check.billed or not labels,
                f"{check.user}: some of the user's series carry the group {labels[0] if labels else ''}, others none"))


def token_counters_match_the_ledger(check: UserCheck) -> Verdict:
    if check.server_tokens is None:
        return not_applicable(f"{check.user}: no token counters to compare")
    rows = [row(check, "total tokens", check.client.total_tokens, check.server_tokens)]
    return first_failure(_no_reset(check, rows), require(rows[0]["difference"] == 0,
                                                         f"{check.user}: the server counted other token hits", rows))


def group_counters_match_the_ledger(group: GroupCount) -> Verdict:
    rows = [{"group": group.group, "counter": kind, "client": bounds, "server": server}
            for kind, bounds, server in (("authorized", group.counted.expected("authorized"), group.authorized),
                                         ("limited", group.counted.expected("limited"), group.limited))]
    return require(group.counted.allows(group.authorized, group.limited),
                   f"group {group.group}: the server counted differently", rows)


# --- auth: requests rejected before the limiter moved nothing -----------------------------------------------------
def rejected_requests_moved_no_counter(v: Verification) -> Verdict:
    rejected = [c for c in v.users.values() if c.client.rejected]
    if not rejected:
        return not_applicable("no request of this run was rejected by auth")
    moved = [c for c in rejected if c.server_authorized + c.server_limited > c.counted.total[1]]
    return require(not moved, f"{', '.join(c.user for c in moved)}: the server counted more calls than reached the "
                              f"limiter; {sum(c.client.rejected for c in moved)} request(s) were rejected by auth "
                              "(401/403)",
                   [row(c, "authorized+limited", c.counted.total[1], c.server_authorized + c.server_limited)
                    for c in moved])


def no_series_for_identities_outside_the_plan(v: Verification) -> Verdict:
    strangers = [c for c in v.users.values() if c.tier is None and (c.server_authorized or c.server_limited)]
    return require(not strangers, "series for users that are not identities of the Plan",
                   [row(c, "authorized", c.client.authorized, c.server_authorized, "0") for c in strangers])


def authorino_counted_the_rejections(v: Verification) -> Verdict:
    witness = v.auth
    if witness is None:
        return undecided(v.auth_why)
    between = (f"between Authorino's scrapes at {clock(witness.before)} (before the run's first request) and "
               f"{clock(witness.after)} (after its last answer)")
    if witness.restarts:
        return undecided(f"{witness.restarts} of Authorino's counters restarted {between}")
    client = expected_rejections(client_rejections((c.client for c in v.users.values()), v.record.plan), witness)
    rows, problems, extra = [], [], []
    for code, status in REJECTIONS:
        low, high = client[code]
        server = witness.counted[status]
        rows.append({"authconfig": witness.authconfig, "status": status, "client": f"{low} x {code}",
                     "server": server, "expected": span((low, high)), "difference": server - low})
        if server < low:
            problems.append(f"{low - server} of the run's {low} x {code} not counted as {status} (an answer that did "
                            "not come from Authorino's decision, or a lost increment)")
        elif server > high:
            extra.append(f"{server} counted as {status}, {server - high} more than the run's requests explain")
    if not problems and extra:  # Authorino counts per AuthConfig: another client of the route adds to it too
        return undecided(f"AuthConfig {witness.authconfig}: {'; '.join(extra)} (another client of the route in that "
                         f"span, or Authorino counting twice), {between}")
    return require(not problems, f"AuthConfig {witness.authconfig}: {'; '.join(problems)}, {between}", rows)


# --- the policy: limits held, answers possible, counts as the window model expects --------------------------------
def _not_followed(check: UserCheck) -> Verdict:
    return undecided(check.explanation.why if check.explanation else "the window model does not follow this user")


def _raced(check: UserCheck, over: int, windows: int, strict: bool) -> tuple[bool, str]:
    """Whether an overshoot of `over` over `windows` window(s) is within Limitador's check-then-update race (at most
    one less than the requests in flight at once, per window) and may pass; what to add to a failure's title."""
    most = windows * max(check.in_flight - 1, 0)
    if not most:
        return False, ""
    if over > most:
        return False, f"; {check.in_flight} requests in flight at once explain at most {most}"
    return not strict, f" ({check.in_flight} requests in flight at once), which --strict-limits fails"


def policy_limit_held(check: UserCheck, rate: Rate, strict: bool = False) -> Verdict:
    if rate.label not in check.bounds:
        return _not_followed(check)
    most, windows = check.bounds[rate.label]
    client, server = check.client.authorized, check.server_authorized
    over = max(client, server - check.token_calls) - most
    if over <= 0:
        return holds()
    passes, why = _raced(check, over, windows, strict)
    if passes:
        return holds(f"{check.user}: {over} over {rate.label}, within {check.in_flight} requests in flight at once "
                     "(Limitador's check-then-update race)")
    token_calls = f" (less at most {check.token_calls} token check(s))" if check.token_calls else ""
    return fails(f"{check.user}: the limit {rate.label} did not hold: the client got {client} answer(s) past the "
                 f"limiter and the server counted {server} authorized{token_calls}, but over the run's timeline the "
                 f"policy lets at most {most} through ({windows} window(s)){why}",
                 [row(check, "authorized", client, server, f"<= {most + check.token_calls}")])


def answers_follow_the_policy(check: UserCheck, strict: bool = False) -> Verdict:
    explanation = check.explanation
    if explanation is None or check.prior is None:
        return _not_followed(check)
    if explanation.consistent is None:
        return undecided(explanation.why)
    odd = explanation.unexplained
    raced = "; ".join(f"requests {o.first}-{o.last} got {o.over} more through than {' and '.join(o.limits)} had "
                      f"room for, within {o.in_flight} requests in flight at once" for o in check.overshoots)
    if odd is None and raced and strict:
        return fails(f"{check.user}: {raced} (Limitador's check-then-update race), which --strict-limits fails")
    if odd is None:
        return holds(f"{check.user}: {raced} (Limitador's check-then-update race)" if raced else "")
    before = f"(state before the run: {check.prior.source})"
    user = check.user
    if odd.first == odd.last and odd.authorized:
        return fails(f"{user}: request {odd.first} (sent {clock(odd.sent[0])}) got through the limiter, but "
                     f"{' and '.join(odd.full) or 'a limit'} was already full in every possible world {before}")
    if odd.first == odd.last:
        return fails(f"{user}: request {odd.first} (sent {clock(odd.sent[0])}) got Kuadrant's 429, but every "
                     f"limit had room in every possible world {before}")
    low, high = odd.possible
    return fails(f"{user}: requests {odd.first}-{odd.last} (sent {clock(odd.sent[0])} to {clock(odd.sent[1])}, "
                 f"in flight together) got {odd.authorized} x through and {odd.limited} x 429, but the policy lets "
                 f"{low}" + (f"..{high}" if high > low else "") + f" of them through {before}")


def counts_match_the_window_model(check: UserCheck, v: Verification) -> Verdict:
    prediction = check.prediction
    if prediction is None:
        return _not_followed(check)
    last = check.client.last_answer()
    if check.open_ended or (last is not None and v.after.window[0] < last):
        return undecided(check.open_ended or "the counters were last read before the run's last answer")
    authorized, limited = prediction.authorized, prediction.limited
    server_a, server_l = check.server_authorized, check.server_limited
    if authorized[0] <= server_a <= authorized[1] and limited[0] <= server_l <= limited[1]:
        return holds()
    over = sum(o.over for o in check.overshoots)  # what the client's answers show raced past a limit
    raced = (0 < server_a - authorized[1] <= over and limited[0] - over <= server_l <= limited[1]
             and authorized[0] + limited[0] <= server_a + server_l <= authorized[1] + limited[1])
    if raced and not v.strict:
        return holds(f"{check.user}: {server_a - authorized[1]} authorized over the window model's {span(authorized)}, "
                     "the overshoot of requests in flight together (Limitador's check-then-update race)")
    why = "" if prediction.decided and limited[0] == limited[1] else f" ({prediction.why_range})"
    strict = (f"; the server's {server_a - authorized[1]} more are the overshoot of requests in flight together, "
              "which --strict-limits fails") if raced else ""
    return fails(f"{check.user}: the window model expects {span(authorized)} authorized / {span(limited)} "
                 f"limited{why}{strict}",
                 [row(check, "authorized", check.client.authorized, server_a, span(authorized)),
                  row(check, "limited", check.client.limited, server_l, span(limited))])
