"""A bare Locust user for bench/gateway_speed.py: no wait, one POST /v1/completions per iteration.

Run by gateway_speed.py as one headless process; the request is the one wrk sends (BODY and HEADERS there).
"""
from gateway_speed import BODY, COMPLETIONS_PATH, HEADERS
from locust import FastHttpUser, constant, task


class BareCompletionUser(FastHttpUser):
    """Posts the benchmark completion back to back."""

    wait_time = constant(0)

    @task
    def completion(self) -> None:
        self.client.post(COMPLETIONS_PATH, data=BODY, headers=HEADERS)
