"""End to end: the stand-in gateway and a real Prometheus; the seed's traffic over HTTP; counters read back
through prometheus-api-client after a confirmed scrape."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from chargeback.prometheus import MetricsSourceError, PrometheusSource
from chargeback.schema import SCHEMAS
from sim.stack import LocalStack
from test_gateway import BODY, SEED
from test_plan import DEPLOY, secret, write


def post(url: str, key: str | None) -> int:
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(BODY).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if key:
        request.add_header("Authorization", f"APIKEY {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def per_user(source: PrometheusSource, metric: str) -> dict[str, dict[str, str]]:
    """user -> labels of the series, asserting one series per user and integer values."""
    found: dict[str, dict[str, str]] = {}
    for labels, value in source.vector(f'{metric}{{user!=""}}'):
        assert labels["user"] not in found, f"duplicate series for {labels['user']}"
        found[labels["user"]] = {**labels, "value": value}
    return found


@pytest.mark.parametrize("schema", ["seed", "fork", "telemetry"])
def test_seed_traffic_is_counted_exactly_in_prometheus(schema: str, tmp_path: Path) -> None:
    write(tmp_path, "gold.yaml", secret("golduser", "gold"))
    names = SCHEMAS[schema]
    with LocalStack([str(DEPLOY), str(tmp_path)], schema=schema) as stack:
        statuses = {user: [post(stack.gateway_url, f"{user}_key") for _ in range(n)] for user, n in SEED}
        rejected = [post(stack.gateway_url, key) for key in (None, "nobody_key", "golduser_key")]
        sent_last = time.time()
        source = PrometheusSource(stack.prometheus_url, job="limitador")
        source.wait_for_scrape(after=sent_last)
        authorized = per_user(source, names.authorized)
        limited = per_user(source, names.limited)
        totals = [source.vector(f"sum({metric})")[0][1] for metric in
                  (names.authorized, names.limited, "authorized_calls", "limited_calls")]
    assert statuses == {"premiumuser1": [200] * 8, "freeuser1": [200] * 2 + [429] * 3, "premiumuser2": [200] * 6}
    assert rejected == [401, 401, 403]
    assert {u: s["value"] for u, s in authorized.items()} == {"premiumuser1": 8, "freeuser1": 2, "premiumuser2": 6}
    assert {u: s["value"] for u, s in limited.items()} == {"freeuser1": 3}
    assert totals == [16, 3, 16, 3]  # the 401s and the 403 moved no counter, per user or per namespace
    series = authorized["freeuser1"]
    assert (series["limitador_namespace"], series["job"]) == ("llm/vllm-httproute", "limitador")
    if schema == "fork":
        assert "group" not in series and series["model"] == "Qwen/Qwen3-0.6B"  # the fork's usual missing group
    else:
        assert (authorized["premiumuser2"]["group"], limited["freeuser1"]["group"]) == ("premium", "free")


def test_scrape_barrier_fails_clearly_without_prometheus() -> None:
    source = PrometheusSource("http://127.0.0.1:9", timeout=1)
    with pytest.raises(MetricsSourceError, match=r"^Prometheus at http://127.0.0.1:9: cannot read /api/v1/targets: "):
        source.wait_for_scrape(after=time.time(), timeout=2)
