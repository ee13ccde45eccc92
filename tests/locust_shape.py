"""A user's own locustfile for the tests: the suite plus a LoadTestShape of two steps, which drives the tier users."""
from locust import LoadTestShape

from users.entry import *  # noqa: F403


class TwoSteps(LoadTestShape):
    """2 users for 2 s, then 4 until 4 s."""

    def tick(self) -> tuple[int, float] | None:
        elapsed = self.get_run_time()
        return None if elapsed >= 4 else ((2, 10.0) if elapsed < 2 else (4, 10.0))
