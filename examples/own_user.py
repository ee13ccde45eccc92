"""An own tier user with chat and streaming: `locust -f locustfile.py,examples/own_user.py ...`

`tier = "premium"` makes it the premium tier's user class: it replaces the generated PremiumUser, with Locust's
controls (-u, -r, -t, --tier-weights) and with scenarios alike. Every request through `self.client` carries its
identity in the request context, so the ledger accounts it and the checks verify it; `self.headers` holds its key.
"""
from locust import constant_pacing, task

from users.base import TierUser


class PremiumChat(TierUser):
    tier = "premium"
    wait_time = constant_pacing(0.5)  # your own pacing (without it, the stream's pattern applies)

    @task(3)
    def chat(self) -> None:
        self.ask({"messages": [{"role": "user", "content": "Hi there"}]}, "premium chat")

    @task(1)
    def chat_streamed(self) -> None:  # usage comes in the last chunk
        self.ask({"messages": [{"role": "user", "content": "Stream it"}], "stream": True,
                  "stream_options": {"include_usage": True}}, "premium chat (stream)")

    def ask(self, body: dict, name: str) -> None:
        body = {"model": "Qwen/Qwen3-0.6B", "max_tokens": 8, **body}
        with self.client.post("/v1/chat/completions", json=body, headers=self.headers, name=name,
                              catch_response=True) as response:
            if response.status_code == 429:  # the gateway's limit: expected (the checks verify it)
                response.success()
