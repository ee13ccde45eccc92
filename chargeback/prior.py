"""The counters' state before a run, where the window model starts: read from Limitador's `GET /counters/{ns}`
when the run had it, else rebuilt from the counters' history in Prometheus, else unknown (windows may be open).

History: a user's authorized series, absent at a successful scrape of its target, or fallen back (a restart), has no
live window then (Limitador keeps windows in memory, and a window needs an authorized call); so do times one whole
window after the user's last increment. From the latest such moment, the increments since (each somewhere within
its scrape interval) are replayed through the window model; their sum is the user's state before the run.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any

from .counters import counter_identity, in_namespace
from .expectations import EDGE, Prior, follow
from .ledger import ANY_SENDER, AUTHORIZED, Timeline
from .limits import descriptor
from .plan import Rate
from .prometheus import PrometheusSource


def from_counters(reading: dict[str, Any], rates: list[Rate], counters: dict[str, list[str]],
                  values: dict[str, list[str]]) -> Prior:
    """One identity's state from a `/counters` reading (`{"counters": [...], "read": [sent, answered]}`):
    `counters` maps each limit name to its counter expressions, `values` to this identity's values of them.
    A listed counter is a window: its count `max_value - remaining` (a wrapped `remaining` means full), its expiry
    `expires_in_seconds` (truncated) after the read; a counter not listed has no live window."""
    sent, answered = reading["read"]
    state: list[tuple | None] = []
    for rate in rates:
        wanted = [values.get(rate.limit_name, []), counters.get(rate.limit_name, [])]
        found = next((entry for entry in reading["counters"] if _matches(entry, rate, *wanted)), None)
        if found is None:
            state.append(None)
            continue
        remaining = found.get("remaining")
        count = rate.limit if remaining is None or remaining > rate.limit else rate.limit - remaining
        expires = float(found.get("expires_in_seconds") or 0)
        state.append((sent + expires - rate.window, answered + expires + 1 - rate.window, count, count))
    return Prior((tuple(state),), sent, "Limitador's /counters before the run")


def windows_listed(reading: dict[str, Any], rates: list[Rate], counters: dict[str, list[str]],
                   values: dict[str, list[str]]) -> bool:
    """Whether a `/counters` reading lists a live window of one of `rates` for the identity with `values`."""
    return any(_matches(entry, rate, values.get(rate.limit_name, []), counters.get(rate.limit_name, []))
               for entry in reading["counters"] for rate in rates)


def _matches(entry: dict[str, Any], rate: Rate, values: list[str], sources: list[str]) -> bool:
    limit = entry.get("limit") or {}
    if limit.get("name") != rate.limit_name or int(limit.get("seconds", -1)) != int(rate.window):
        return False
    variables = entry.get("set_variables") or {}
    return [variables.get(descriptor(s), variables.get(s)) for s in sources] == list(values)


def lookback(rates: list[Rate], interval: float) -> float:
    """Seconds of history to read before the run: two of the longest windows and a few scrapes."""
    return 2 * max((r.window for r in rates), default=0.0) + 3 * interval


def from_history(source: PrometheusSource, metric: str, namespace: str | None, rates_by_user: dict[str, list[Rate]],
                 at: float) -> dict[str, Prior]:
    """Each user's state at `at` from the history of its authorized counter in Prometheus; unknown (with the
    reason) where the history does not tell."""
    targets = source.targets()
    span = lookback([r for rates in rates_by_user.values() for r in rates], max(t.interval for t in targets))
    since = at - span
    scrapes = {(t.job, t.instance): sorted(time for time, up in samples if up == 1)
               for t, samples in source.target_scrapes(since, at).items()}
    series: dict[str, dict[tuple, list[tuple[float, float]]]] = {}
    for labels, samples in source.matrix(f'{metric}{{user!=""}}[{int(span * 1000) + 1}ms]', at):
        if (labels.get("job"), labels.get("instance")) in scrapes and in_namespace([(labels, 0.0)], namespace):
            key = ((labels.get("job"), labels.get("instance")), counter_identity(labels))
            series.setdefault(labels["user"], {}).setdefault(key, samples)
    return {user: _replay(rates, scrapes, series.get(user, {}), at) for user, rates in rates_by_user.items()}


def _replay(rates: list[Rate], scrapes: dict[tuple, list[float]], counters: dict[tuple, list[tuple[float, float]]],
            at: float) -> Prior:
    """One user's state at `at`, from its counters' samples and its targets' successful scrapes."""
    if not rates:
        return Prior.fresh(rates, at, "no request limit applies")
    if not all(scrapes.values()):
        return Prior.unknown(rates, at, "the gateway was not scraped before the run")
    calls, reset = _calls(scrapes, counters)
    longest = max(r.window for r in rates)
    latest = min(times[0] for times in scrapes.values())  # from here on the counters are known
    for lo, hi in calls + [(at, at)]:
        if lo - latest >= longest + EDGE:  # a stretch of one window without calls: no window is open after it
            reset = lo if reset is None else max(reset, lo)
        latest = max(latest, hi)
    if reset is None:
        return Prior.unknown(rates, at, "the counters' history does not show when the windows before the run opened")
    followed = follow(Timeline.of((lo, hi, AUTHORIZED, ANY_SENDER) for lo, hi in calls if hi > reset), rates,
                      {(None,) * len(rates)})
    if followed is None or followed[1] is not None:
        return Prior.unknown(rates, at, "the counters' history before the run does not follow the policy "
                                        "(another client, replicas or overshoot)")
    return Prior(tuple(followed[0]), at, "the counters' history in Prometheus before the run")


def _calls(scrapes: dict[tuple, list[float]],
           counters: dict[tuple, list[tuple[float, float]]]) -> tuple[list[tuple[float, float]], float | None]:
    """Every authorized call since each target's latest reset, as (earliest, latest) moment, from the raw samples;
    and the moment from which every target is known to have had no window (None unless each has a reset): the last
    successful scrape without any of the user's series there, or the scrape before a counter fell back."""
    resets: dict[tuple, float] = {}
    per_target: dict[tuple, list[tuple[float, float]]] = {}
    for target, times in scrapes.items():
        mine = [samples for key, samples in counters.items() if key[0] == target]
        present = {round(t, 3) for samples in mine for t, _ in samples}
        absent = [t for t in times if round(t, 3) not in present]
        if absent:
            resets[target] = absent[-1]
        calls = per_target.setdefault(target, [])
        for samples in mine:
            have = {round(t, 3) for t, _ in samples}
            previous_t = previous_v = None
            for t, value in samples:
                between = times[bisect_right(times, previous_t) if previous_t is not None else 0:bisect_left(times, t)]
                missed = [s for s in between if round(s, 3) not in have]
                if missed:  # born, or back after a restart: every call since the scrape without it
                    calls += [(missed[-1], t)] * round(value)
                elif previous_v is not None and value < previous_v:  # fell back: restarted in between
                    calls += [(previous_t, t)] * round(value)
                    resets[target] = max(resets.get(target, previous_t), previous_t)
                elif previous_v is not None:
                    calls += [(previous_t, t)] * round(value - previous_v)
                previous_t, previous_v = t, value  # (a first sample at the first scrape is a baseline)
    kept = sorted(call for target, calls in per_target.items() for call in calls
                  if target not in resets or call[1] > resets[target])
    return kept, (min(resets.values()) if len(resets) == len(scrapes) else None)
