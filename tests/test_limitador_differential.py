"""Proof against the real engine: the stand-in's limiter and the `limitador` crate (in-memory storage, driven through
the Rust harness in tests/limitador_harness) take the same randomized traces, built from a Plan's compiled limits, and
must give the same decision for every call and the same live counters.

The crate keeps real time, so both sides run in real time: the operations come in short bursts every TICK seconds
and every window (1 s or 3 s) ends half-way between two bursts, far from any operation; the stand-in's clock reads
the burst's tick. Replay a failing trace with `LIMITADOR_DIFF_SEED=<seed>`.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from test_plan import DEPLOY, secret, write

from chargeback.limits import compiled_limit, compiled_limits, limit_identifier
from chargeback.plan import Limit, Plan, load_plan
from sim.gateway import _specs
from sim.limiter import CounterSpec, Limiter

pytestmark = pytest.mark.e2e

HARNESS = Path(__file__).resolve().parent / "limitador_harness"
NAMESPACE = "llm/vllm-httproute"
TICK = 0.4  # s between bursts: a window of 1 s or 3 s opened in a burst ends half-way between two later bursts
BURST = 0.12  # s: a burst must end this soon after its tick, so no operation comes within 80 ms of a window's end
TICKS = 32  # a trace: 12.8 s, windows expiring all along
TRACES = 3
DUMP_EVERY = 4  # ticks between two comparisons of the live counters (and one after the last tick)
ATTEMPTS = 3  # a trace whose burst ran late (a busy machine) is run again, from the start, on fresh limiters

FREE = 'auth.identity.groups.split(",").exists(g, g == "free")'
PREMIUM = 'auth.identity.groups.split(",").exists(g, g == "premium")'
GATEWAY = "targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: vllm-gateway}"
USERID = "counters: [{expression: auth.identity.userid}]"
# The demo's keys and groups, and a few more users (one in two tiers); short windows, several limits on each user, a
# global limit checked first, and tokens.
USERS = "---\n".join(secret(user, groups) for user, groups in (
    ("freeuser3", "free"), ("freeuser4", "free"), ("premiumuser3", "premium"), ("bothuser1", "free,premium")))
POLICIES = f"""\
apiVersion: kuadrant.io/v1
kind: RateLimitPolicy
metadata: {{name: short-limits, namespace: llm}}
spec:
  {GATEWAY}
  limits:
    all-requests:
      rates: [{{limit: 8, window: 1s}}]
    free-user-requests:
      rates: [{{limit: 2, window: 1s}}, {{limit: 4, window: 3s}}]
      when: [{{predicate: '{FREE}'}}]
      {USERID}
    premium-user-requests:
      rates: [{{limit: 3, window: 1s}}]
      when: [{{predicate: '{PREMIUM}'}}]
      {USERID}
    per-user-requests:
      rates: [{{limit: 7, window: 3s}}]
      {USERID}
---
apiVersion: kuadrant.io/v1alpha1
kind: TokenRateLimitPolicy
metadata: {{name: short-token-limits, namespace: llm}}
spec:
  {GATEWAY}
  limits:
    free-user-tokens:
      rates: [{{limit: 30, window: 3s}}]
      when: [{{predicate: '{FREE}'}}]
      {USERID}
    premium-user-tokens:
      rates: [{{limit: 40, window: 1s}}, {{limit: 100, window: 3s}}]
      when: [{{predicate: '{PREMIUM}'}}]
      {USERID}
"""
TOKENS = (0, 0, 1, 4, 9, 17, 30)  # usage.total_tokens of an answer: 0 is charged as 1


class Mismatch(AssertionError):
    """The stand-in and the crate disagree."""


class Late(Exception):
    """A burst ended too long after its tick for the comparison to be exact."""


@pytest.fixture(scope="module")
def harness() -> Path:
    """The harness binary, built with cargo (cached in its target/ across runs); skipped without cargo."""
    rustup_cargo = Path.home() / ".cargo" / "bin" / "cargo"
    cargo = shutil.which("cargo") or (str(rustup_cargo) if rustup_cargo.is_file() else None)
    if cargo is None:
        pytest.skip("cargo not found: the differential test against the real Limitador crate needs the Rust "
                    "toolchain (https://rustup.rs) on PATH or in ~/.cargo/bin")
    started = time.monotonic()
    build = subprocess.run([cargo, "build", "--locked", "--quiet", "--manifest-path", str(HARNESS / "Cargo.toml"),
                            "--target-dir", str(HARNESS / "target")], capture_output=True, text=True, timeout=1800)
    if build.returncode != 0:
        pytest.fail(f"cargo build of {HARNESS} failed (exit {build.returncode}):\n"
                    + "\n".join((build.stdout + build.stderr).splitlines()[-25:]), pytrace=False)
    print(f"limitador harness built in {time.monotonic() - started:.1f} s")
    return HARNESS / "target" / "debug" / "limitador-harness"


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    folder = tmp_path_factory.mktemp("policies")
    write(folder, "policies.yaml", POLICIES)
    write(folder, "users.yaml", USERS)
    plan = load_plan([DEPLOY / "api-keys.yaml", DEPLOY / "auth-policy.yaml", DEPLOY / "prices.yaml", folder])
    assert len(compiled_limits(plan, NAMESPACE)) == 8  # every rate of both policies holds in the namespace
    return plan


class Crate:
    """The harness process: one JSON line per call, one per answer."""

    def __init__(self, binary: Path):
        self.process = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def call(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"harness: {answer['error']} (request {request})")
        return answer

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


@dataclass(frozen=True)
class Call:
    """One limiter call of one user: its specs for the stand-in, its descriptors for the crate."""

    specs: tuple[CounterSpec, ...]
    descriptors: list[dict[str, str]]


def calls_of(plan: Plan, user: str) -> tuple[Call | None, Call | None]:
    """A user's RateLimitPolicy call and TokenRateLimitPolicy call (None when no limit of that kind applies), with
    the specs the gateway builds and the descriptor entries the wasm-shim sends."""
    identity = plan.identity(user)
    found = []
    for kind in ("requests", "tokens"):
        limits: list[Limit] = [l for l in plan.limits_for(identity) if l.kind == kind]
        specs: list[CounterSpec] = []
        entries: dict[str, str] = {}
        for limit in limits:
            values = limit.counter_values(identity.auth)
            specs += _specs(limit, values)
            entries[limit_identifier(limit)] = "1"
            entries.update({counter.source: value for counter, value in zip(limit.counters, values)})
        found.append(Call(tuple(specs), [entries]) if limits else None)
    return found[0], found[1]


class Clock:
    """The stand-in's clock: the current burst's tick."""

    def __init__(self) -> None:
        self.tick = 0

    def __call__(self) -> float:
        return self.tick * TICK


@dataclass
class Tally:
    """What a trace compared."""

    decisions: int = 0
    limited: int = 0
    reports: int = 0
    zero_reports: int = 0
    dumps: int = 0
    counters: int = 0


def standin_counters(limiter: Limiter, compiled: dict[tuple[str, int], dict[str, Any]]) -> dict[tuple, tuple]:
    """The stand-in's live counters, keyed as the crate's; remaining as the crate shows it (saturating at 0)."""
    found = {}
    for state in limiter.counters():
        limit = compiled[(state.spec.limit_name, state.spec.rate_index)]
        key = (limit["name"], limit["seconds"], tuple(sorted(limit["conditions"])), tuple(sorted(limit["variables"])),
               tuple(sorted(zip(limit["variables"], state.spec.values))))
        found[key] = (max(state.spec.max_value - state.value, 0), state.expires_in)
    return found


def crate_counters(crate: Crate) -> dict[tuple, tuple]:
    """The crate's live counters (`GET /counters/{ns}`), keyed by limit and counter values."""
    return {(c["name"], c["seconds"], tuple(c["conditions"]), tuple(c["variables"]),
             tuple(sorted(c["set_variables"].items()))): (c["remaining"], c["expires_in"])
            for c in crate.call(op="counters", namespace=NAMESPACE)["counters"]}


def counters_differ(ours: dict[tuple, tuple], theirs: dict[tuple, tuple]) -> list[str]:
    """One line per counter that only one side has, or whose remaining or window differs."""
    lines = []
    for key in sorted(set(ours) | set(theirs), key=repr):
        name, seconds, *_, values = key
        label = f"{name} ({seconds} s) {dict(values)}"
        if key not in theirs or key not in ours:
            side, (remaining, expires_in) = ("the stand-in", ours[key]) if key in ours else ("the crate", theirs[key])
            lines.append(f"{label}: only {side} has it, remaining {remaining}, expires in {expires_in:.2f} s")
        elif ours[key][0] != theirs[key][0] or abs(ours[key][1] - theirs[key][1]) >= TICK / 2:
            lines.append(f"{label}: remaining, expires in: stand-in {ours[key][0]}, {ours[key][1]:.2f} s; "
                         f"crate {theirs[key][0]}, {theirs[key][1]:.2f} s")
    return lines


def run_trace(binary: Path, plan: Plan, seed: int, limiter_type: type[Limiter]) -> Tally:
    """Drive the crate and a stand-in limiter through one randomized trace; raises Mismatch at the first
    difference, Late when a burst overran."""
    rng = random.Random(seed)
    compiled = {(limit_identifier(l), i): compiled_limit(l, rate, NAMESPACE)
                for l in plan.limits for i, rate in enumerate(l.rates)}
    users = {i.user: calls_of(plan, i.user) for i in plan.identities}
    start = {user: rng.randrange(3 * TICKS // 4) for user in users}  # users come along mid-trace: new counters
    clock = Clock()
    limiter = limiter_type(clock)
    crate = Crate(binary)
    tally = Tally()
    log: list[tuple[int, str, str]] = []  # (tick, user, what) of every call
    reports: dict[int, list[tuple[str, int]]] = {}  # tick -> (user, tokens) of the reports due then

    def calls_so_far(user: str | None = None) -> str:
        return "\n".join(f"  tick {t} {u}: {what}" for t, u, what in log if user in (None, u))

    def decide(user: str, op: str, call: Call) -> bool:
        ours = limiter.check(call.specs) is not None
        theirs = crate.call(op=op, namespace=NAMESPACE, descriptors=call.descriptors, hits_addend=1)["limited"]
        log.append((clock.tick, user, f"{op} -> {'limited' if theirs else 'ok'}"))
        tally.decisions += 1
        tally.limited += theirs
        if ours != theirs:
            raise Mismatch(f"seed {seed}, tick {clock.tick}: {op} of {user}: the stand-in says "
                           f"{'limited' if ours else 'ok'}, the crate {'limited' if theirs else 'ok'}\n"
                           f"{user}'s calls:\n{calls_so_far(user)}")
        return not theirs

    def report(user: str, tokens: int) -> None:
        call = users[user][1]
        assert call is not None
        limiter.report(call.specs, tokens)
        crate.call(op="report", namespace=NAMESPACE, descriptors=call.descriptors, hits_addend=tokens)
        log.append((clock.tick, user, f"report {tokens} tokens"))
        tally.reports += 1
        tally.zero_reports += tokens == 0

    try:
        assert crate.call(op="limits", limits=compiled_limits(plan, NAMESPACE)) == {"limits": len(compiled)}
        began = time.monotonic() + 0.05
        for tick in range(TICKS):
            clock.tick = tick
            time.sleep(max(0.0, began + tick * TICK - time.monotonic()))
            for user, tokens in reports.pop(tick, []):  # answers that took a tick or two
                report(user, tokens)
            requests = [user for user in users if tick >= start[user] for _ in range(rng.choice((0, 0, 1, 1, 2, 3)))]
            rng.shuffle(requests)
            for user in requests:
                request_call, token_call = users[user]
                if request_call is not None and not decide(user, "should_rate_limit", request_call):
                    continue
                if token_call is not None and decide(user, "check_rate_limit", token_call):
                    reports.setdefault(tick + rng.choice((0, 0, 1, 2)), []).append((user, rng.choice(TOKENS)))
            for user, tokens in reports.pop(tick, []):  # answers within the burst
                report(user, tokens)
            if tick % DUMP_EVERY == DUMP_EVERY - 1 or tick == TICKS - 1:
                ours, theirs = standin_counters(limiter, compiled), crate_counters(crate)
                tally.dumps += 1
                tally.counters += len(theirs)
                differ = counters_differ(ours, theirs)
                if differ:
                    raise Mismatch(f"seed {seed}, tick {tick}: the live counters differ:\n" + "\n".join(differ)
                                   + f"\nthe calls:\n{calls_so_far()}")
            late = time.monotonic() - (began + tick * TICK)
            if late > BURST:
                raise Late(f"seed {seed}: the burst of tick {tick} ended {late * 1000:.0f} ms after its tick "
                           f"(at most {BURST * 1000:.0f} ms keeps every call off the windows' ends)")
    finally:
        crate.close()
    return tally


def compare(binary: Path, plan: Plan, seed: int, limiter_type: type[Limiter] = Limiter) -> Tally:
    """run_trace, run again from the start when a burst ran late; fails after ATTEMPTS late runs."""
    for _ in range(ATTEMPTS - 1):
        try:
            return run_trace(binary, plan, seed, limiter_type)
        except Late:
            continue
    try:
        return run_trace(binary, plan, seed, limiter_type)
    except Late as late:
        pytest.fail(f"{late}, {ATTEMPTS} times: the machine is too busy for an exact comparison", pytrace=False)


def seeds() -> range:
    """TRACES seeds from LIMITADOR_DIFF_SEED, else from a random one (each failure names its trace's seed)."""
    base = int(os.environ.get("LIMITADOR_DIFF_SEED") or random.randrange(2**32))
    return range(base, base + TRACES)


def test_the_stand_in_decides_and_counts_as_the_real_limitador(harness: Path, plan: Plan) -> None:
    tallies = [compare(harness, plan, seed) for seed in seeds()]
    total = Tally(*(sum(getattr(t, field) for t in tallies) for field in Tally.__dataclass_fields__))
    print(f"{TRACES} traces: {total.decisions} decisions ({total.limited} limited), {total.reports} token reports "
          f"({total.zero_reports} of 0 tokens), {total.counters} counters compared in {total.dumps} dumps")
    # every trace exercised what it is for: limited calls, token reports of 0, counters to compare
    assert all(t.limited and t.zero_reports and t.counters for t in tallies), tallies


class IgnoresZeroReports(Limiter):
    """The stand-in before the differential test: a report of 0 tokens added nothing."""

    def report(self, specs: Any, hits: int) -> None:
        if hits:
            super().report(specs, hits)


class StopsAtTheFirstLimit(Limiter):
    """The stand-in before the differential test: the first counter over its limit ended the check, so no counter
    after it was created."""

    def check(self, specs: Any) -> CounterSpec | None:
        specs, now = tuple(specs), self.clock()
        for n, spec in enumerate(specs):
            window = self._windows.get(spec.key)
            if window is not None and window.expires_at > now and window.value + 1 > spec.max_value:
                return super().check(specs[:n + 1])
        return super().check(specs)


class ChargesTokenChecks(Limiter):
    """A token check that counts a hit, as a request check does (and so opens its window at the check)."""

    def check(self, specs: Any) -> CounterSpec | None:
        return super().check(replace(spec, hits_on_check=1) for spec in specs)


USER = """{'descriptors[0]["auth.identity.userid"]': """


@pytest.mark.parametrize(("wrong", "tick", "first"), [
    (IgnoresZeroReports, 3, f"premium-user-tokens (1 s) {USER}'premiumuser3'}}: only the crate has it, remaining 39,"),
    (StopsAtTheFirstLimit, 23, f"per-user-requests (3 s) {USER}'premiumuser2'}}: only the crate has it, remaining 7,"),
    (ChargesTokenChecks, 3, f"free-user-tokens (3 s) {USER}'freeuser3'}}: only the stand-in has it, remaining 29,"),
], ids=["ignores-zero-reports", "stops-at-the-first-limit", "charges-token-checks"])
def test_a_wrong_stand_in_is_caught(harness: Path, plan: Plan, wrong: type[Limiter], tick: int, first: str) -> None:
    with pytest.raises(Mismatch) as caught:
        compare(harness, plan, seed=7, limiter_type=wrong)
    message = str(caught.value).splitlines()
    assert message[0] == f"seed 7, tick {tick}: the live counters differ:"
    assert message[1].startswith(first), message[1]
