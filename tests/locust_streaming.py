"""A locustfile for the tests: the suite's locustfile plus a scenario of streamed chat completions."""
from scenarios import SCENARIOS, Scenario, Stream

SCENARIOS["chat-streaming"] = Scenario(
    "chat-streaming", "premium users: 3 streamed chat completions each",
    (Stream(tiers=("premium",), requests=3, endpoint="chat", stream=True, prompt="Chat request", max_tokens=5),))

from locustfile import *  # noqa: E402,F401,F403  (the tier classes and the shape, with the scenario above)
