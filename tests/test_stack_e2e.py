"""End to end: the stand-in gateway and a real Prometheus; the seed's traffic over HTTP; counters read back
through prometheus-api-client after a confirmed scrape."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from test_gateway import BODY, SEED
from test_plan import DEPLOY, secret, write

from chargeback.prometheus import MetricsSourceError, PrometheusSource
from chargeback.schema import SCHEMAS
from sim.stack import LocalStack

pytestmark = pytest.mark.e2e


def send(url: str, key: str | None) -> tuple[int, str, bytes]:
    """One completion request: status, content type, body."""
    request = urllib.request.Request(f"{url}/v1/completions", data=json.dumps(BODY).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    if key:
        request.add_header("Authorization", f"APIKEY {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["content-type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["content-type"], error.read()


def post(url: str, key: str | None) -> int:
    return send(url, key)[0]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


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
        stack.wait_for_scrape(after=sent_last)
        source = PrometheusSource(stack.prometheus_url, job="limitador")
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
        source.scrape_after(after=time.time(), timeout=2)


def test_separate_replicas_are_targets_of_one_job_each_counting_its_own() -> None:
    with LocalStack([str(DEPLOY)], replicas=2, replica_storage="separate") as stack:
        assert [post(stack.gateway_url, "freeuser1_key") for _ in range(6)] == [200, 200, 200, 200, 429, 429]
        stack.wait_for_scrape(after=time.time())
        source = PrometheusSource(stack.prometheus_url)
        found = {metric: sorted((labels["job"], labels["instance"], value) for labels, value in
                                source.vector(f'{metric}{{user="freeuser1"}}'))
                 for metric in ("authorized_calls_with_user_and_group", "limited_calls_with_user_and_group")}
        counters = [get_json(f"{url}/counters/llm%2Fvllm-httproute") for url in stack.replica_urls]
        statuses = [get_json(f"{url}/status") for url in stack.replica_urls]
        with pytest.raises(urllib.error.HTTPError, match="404"):
            get_json(f"{stack.replica_urls[1]}/counters/llm/vllm-httproute")
    instances = sorted(url.removeprefix("http://") for url in stack.replica_urls)
    assert len(set(instances)) == 2 and stack.replica_urls[0] == stack.gateway_url
    assert found == {"authorized_calls_with_user_and_group": [("limitador", i, 2.0) for i in instances],
                     "limited_calls_with_user_and_group": [("limitador", i, 1.0) for i in instances]}
    assert [[(c["limit"]["name"], c["remaining"]) for c in replica] for replica in counters] == [
        [("free-user-requests", 0)]] * 2
    assert [s["config_err_since"] for s in statuses] == [None, None]


def test_a_killed_gateway_restarts_with_faults_and_a_new_start_time() -> None:
    with LocalStack([str(DEPLOY)]) as stack:
        started = get_json(f"{stack.gateway_url}/status")["started_at"]
        assert [post(stack.gateway_url, "freeuser1_key") for _ in range(3)] == [200, 200, 429]
        stack.kill_gateway()
        assert stack.gateway.returncode == -9 and stack.exited() is stack.gateway
        with pytest.raises(urllib.error.URLError):
            get_json(f"{stack.gateway_url}/status")
        stack.restart_gateway(["fail-open:freeuser1", "mislabel:premiumuser1=enterprise", "model-429:premiumuser2"])
        assert stack.exited() is None
        assert get_json(f"{stack.gateway_url}/status")["started_at"] > started
        assert [post(stack.gateway_url, "freeuser1_key") for _ in range(4)] == [200] * 4  # failing open
        assert post(stack.gateway_url, "premiumuser1_key") == 200
        status, content_type, body = send(stack.gateway_url, "premiumuser2_key")
        assert (status, content_type) == (429, "application/json")
        assert json.loads(body)["error"]["type"] == "rate_limit_error"
        assert [post(stack.gateway_url, "freeuser2_key") for _ in range(2)] == [200, 200]
        assert send(stack.gateway_url, "freeuser2_key") == (429, "text/plain", b"Too Many Requests\n")
        stack.wait_for_scrape(after=time.time())
        source = PrometheusSource(stack.prometheus_url, job="limitador")
        authorized = {labels["user"]: (labels["group"], value)
                      for labels, value in source.vector('authorized_calls_with_user_and_group{user!=""}')}
    assert authorized == {"premiumuser1": ("enterprise", 1.0), "premiumuser2": ("premium", 1.0),
                          "freeuser2": ("free", 2.0)}


def test_slow_scrape_intervals_and_an_unrelated_slow_target() -> None:
    begun = time.time()
    with LocalStack([str(DEPLOY)], scrape_interval="30s", other_target_interval="20s",
                    extra_jobs=["limitador-copy"]) as stack:
        targets = get_json(f"{stack.prometheus_url}/api/v1/targets?state=active")["data"]["activeTargets"]
        jobs = sorted((t["labels"]["job"], t["labels"]["instance"], t["scrapeInterval"]) for t in targets)
        gateway = stack.gateway_url.removeprefix("http://")
        scraped = {t["labels"]["job"]: datetime.fromisoformat(t["lastScrape"]).timestamp() > begun
                   for t in targets if t["health"] == "up"}
    assert jobs == [("authorino", gateway, "30s"), ("limitador", gateway, "30s"), ("limitador-copy", gateway, "30s"),
                    ("prometheus-self", stack.prometheus_url.removeprefix("http://"), "20s")]
    assert scraped["limitador"] and scraped["limitador-copy"]
