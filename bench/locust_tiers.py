"""The project's tier users at max rate, for bench/ledger_overhead.py: locustfile.py plus one bench-only scenario.

    locust -f bench/locust_tiers.py --headless -H URL --scenario bench-max-rate --runs-dir DIR

The scenario is added to scenarios.SCENARIOS here (not in product code) before the locustfile is imported (it
parses the options then), so `--scenario` accepts it. It runs CONNECTIONS simulated users spread evenly over the Plan's
identities, back to back, without a budget, for $LEDGER_BENCH_SECONDS seconds (default 5); each posts the
request bench/gateway_speed.py sends (its model, prompt and max_tokens), with its own identity's key.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from gateway_speed import BODY, CONNECTIONS  # noqa: E402
from ledger_overhead import SCENARIO, SECONDS_ENV  # noqa: E402

from chargeback.plan import DEFAULT_POLICY, load_plan  # noqa: E402
from scenarios import SCENARIOS, Scenario, Stream  # noqa: E402
from scenarios.patterns import BackToBack  # noqa: E402

PLAN = load_plan([DEFAULT_POLICY])  # the default manifests, as the locustfile reads them without --policy


def max_rate_scenario(users: int, seconds: float) -> Scenario:
    """`users` back-to-back simulated users over every identity of the Plan; the first identities get the rest."""
    request = json.loads(BODY)

    def stream(**who: Any) -> Stream:
        return Stream(pattern=BackToBack(), model=request["model"], prompt=request["prompt"],
                      max_tokens=request["max_tokens"], **who)

    identities = [slot.account for slot in Scenario(SCENARIO, "", (stream(tiers=("every-tier",)),)).slots(PLAN)]
    per_identity, rest = divmod(users, len(identities))
    streams = (stream(tiers=("every-tier",), per_identity=per_identity), stream(users=tuple(identities[:rest])))
    return Scenario(SCENARIO, f"bench only: {users} users back to back over {len(identities)} identities, "
                              f"no budget, for {seconds:g} s", streams, duration=seconds)


SCENARIOS[SCENARIO] = max_rate_scenario(CONNECTIONS, float(os.environ.get(SECONDS_ENV, "5")))

# After the scenario is registered: the suite reads the options (and --scenario) when imported.
from users.entry import *  # noqa: E402,F401,F403  (the tier user classes, for Locust to find here)
