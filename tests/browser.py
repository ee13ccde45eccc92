"""Headless Chromium (Debian's package) for the tests: a page's DOM after its scripts ran, or a screenshot."""
from __future__ import annotations

import shutil
import subprocess
import tempfile

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(*args: str) -> subprocess.CompletedProcess:
    """Run Chromium once with a fresh profile (bounded)."""
    binary = shutil.which("chromium")
    assert binary, "Debian's chromium is part of the test set-up (make test-setup / .ci/run)"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        return subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=90)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def rendered_dom(url: str) -> str:
    """The page's DOM after its scripts ran (up to 5 s of virtual time)."""
    return chromium("--virtual-time-budget=5000", "--dump-dom", url).stdout
