"""Running the checks on a run record from code (Locust's --check, the demo): pytest in a child process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKS = Path(__file__).resolve().parent


def run_checks(run: Path, *extra: str) -> int:
    """`pytest checks/ --run RUN` from the repository root; its exit code (0 only if every check passed)."""
    command = [sys.executable, "-m", "pytest", str(CHECKS), "--run", str(Path(run).resolve()), "-q",
               "-p", "no:cacheprovider", *extra]
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # the checks need no plugin; loading them costs ~1 s
    return subprocess.run(command, cwd=CHECKS.parent, env=env).returncode
