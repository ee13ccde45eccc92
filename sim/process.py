"""A child process in its own session, started until a URL answers and stopped with everything it spawned."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import psutil


class ManagedProcess:
    """Runs `argv` with output to `log_path`; `start()` returns once `ready_url` answers 200 from this process."""

    def __init__(self, name: str, argv: list[str], log_path: str, ready_url: str, cwd: str | None = None):
        self.name = name
        self.cwd = cwd
        self.argv = argv
        self.log_path = log_path
        self.ready_url = ready_url
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start and poll `ready_url` (bounded) until it answers 200 while this child is alive and listens on its
        port (so another server answering there does not count); on failure stop and raise a one-line RuntimeError
        with the log's tail."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as resp:
                    if resp.status == 200 and self._listens():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        reason = "exited" if self.process.poll() is not None else f"was not ready after {timeout:g}s"
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"{self.name} at {self.ready_url} {reason}; log: {tail}")

    def _listens(self) -> bool:
        """Whether the child (or a process it spawned) is alive and listening on the ready URL's port."""
        port = urllib.parse.urlsplit(self.ready_url).port or 80
        try:
            parent = psutil.Process(self.process.pid)  # type: ignore[union-attr]
            return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port
                       for p in [parent, *parent.children(recursive=True)] for c in p.net_connections("tcp"))
        except psutil.Error:
            return False

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

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited (negative: killed by that signal); None while it runs."""
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL the process group, as a crash would end it; returns once the child is reaped."""
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

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
