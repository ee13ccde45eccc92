"""A child process in its own session, started until a URL answers and stopped with everything it spawned."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request


class ManagedProcess:
    """Runs `argv` with output to `log_path`; `start()` returns once `ready_url` answers 200."""

    def __init__(self, name: str, argv: list[str], log_path: str, ready_url: str, cwd: str | None = None):
        self.name = name
        self.cwd = cwd
        self.argv = argv
        self.log_path = log_path
        self.ready_url = ready_url
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start and poll `ready_url` (bounded); on failure stop and raise a one-line RuntimeError with the log's tail."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        reason = "exited" if self.process.poll() is not None else f"was not ready after {timeout:g}s"
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} at {self.ready_url} {reason}; log: {tail}")

    def log_tail(self, lines: int = 5) -> str:
        """The last log lines joined onto one line."""
        try:
            with open(self.log_path, errors="replace") as f:
                return " | ".join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip()) or "<empty>"
        except OSError:
            return "<no log>"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout`; idempotent."""
        if not self.running:
            return
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            self.process.wait()
