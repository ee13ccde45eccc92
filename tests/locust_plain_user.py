"""A user class that is no TierUser (requests-based HttpUser): it sets the request context, so the ledger accounts
its requests."""
from locust import HttpUser, constant, task

from users.entry import PLAN


class Plain(HttpUser):
    wait_time = constant(0.2)

    @task
    def complete(self) -> None:
        key = PLAN.identity("freeuser1").key
        self.client.post("/v1/completions", json={"model": "Qwen/Qwen3-0.6B", "prompt": "plain", "max_tokens": 4},
                         headers={"Authorization": f"APIKEY {key}"}, context={"identity": "freeuser1", "tier": "free"})
