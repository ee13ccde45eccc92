"""`python -m chargeback demo`: the seed's traffic against the local stand-in, read back from Prometheus.

The seed sends 8 requests as premiumuser1, 5 as freeuser1 and 6 as premiumuser2, one after another, inside one
window; Limitador must then report authorized 8 / 2 / 6 and limited 0 / 3 / 0.
"""
from __future__ import annotations

import time

import requests

from .plan import Plan, load_plan
from .prometheus import PrometheusSource
from .schema import SCHEMAS

SEED_TRAFFIC = (("premiumuser1", 8), ("freeuser1", 5), ("premiumuser2", 6))
SEED_EXPECTED = {"premiumuser1": (8, 0), "freeuser1": (2, 3), "premiumuser2": (6, 0)}
SEED_BODY = {"model": "Qwen/Qwen3-0.6B", "prompt": "Seed request", "max_tokens": 20}


def replay_seed(gateway_url: str, plan: Plan) -> dict[str, list[int]]:
    """Send the seed's requests in order; the HTTP status of each, per user."""
    assert plan.auth is not None
    statuses: dict[str, list[int]] = {}
    with requests.Session() as session:
        for user, count in SEED_TRAFFIC:
            headers = {"Authorization": plan.auth.header_value(plan.identity(user).key)}
            statuses[user] = [session.post(f"{gateway_url}/v1/completions", json=SEED_BODY, headers=headers,
                                           timeout=10).status_code for _ in range(count)]
    return statuses


def read_counts(source: PrometheusSource, schema: str) -> dict[str, tuple[int, int]]:
    """user -> (authorized, limited) from raw counters; an absent series counts 0."""
    names = SCHEMAS[schema]
    counts: dict[str, list[int]] = {}
    for position, metric in enumerate((names.authorized, names.limited)):
        for labels, value in source.vector(f'sum by (user) ({metric}{{job="limitador", user!=""}})'):
            counts.setdefault(labels["user"], [0, 0])[position] = int(value)
    return {user: (a, l) for user, (a, l) in counts.items()}


def run_demo(policies: list[str], schema: str = "seed") -> int:
    """Start the stand-in, replay the seed, print the table; 0 only if every count is exact."""
    from sim.stack import LocalStack  # only the local-stack commands start the sim

    plan = load_plan(policies)
    print("starting the local stand-in (gateway + model simulator + Prometheus) ...", flush=True)
    with LocalStack(policies, schema=schema) as stack:
        print(f"gateway {stack.gateway_url}, prometheus {stack.prometheus_url}; sending the seed's traffic ...",
              flush=True)
        replay_seed(stack.gateway_url, plan)
        source = PrometheusSource(stack.prometheus_url)
        source.wait_for_scrape(after=time.time())
        counts = read_counts(source, schema)
    groups = plan.user_groups()
    print(f"\n{'user':<14} {'group':<10} {'authorized':>10} {'limited':>8} {'expected':>9} {'cost ' + plan.currency:>10}")
    failures = 0
    for user, expected in SEED_EXPECTED.items():
        got = counts.get(user, (0, 0))
        cost = plan.tiers[groups[user]].price.cost(got[0])
        mark = "ok" if got == expected else "MISMATCH"
        failures += got != expected
        print(f"{user:<14} {groups[user]:<10} {got[0]:>10} {got[1]:>8} {'%d / %d' % expected:>9} {cost:>10.4f}  {mark}")
    print(f"\n{'PASS' if not failures else 'FAIL'}: {len(SEED_EXPECTED) - failures} of {len(SEED_EXPECTED)} users "
          "counted exactly by the gateway's metrics in Prometheus")
    return 0 if not failures else 1
