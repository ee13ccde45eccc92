"""The package as a user installs it: a wheel (`pip install .`) gives the `chargeback` command and the pytest
plugin, and the built-in checks run from any folder with `pytest --run`."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_plan import DEPLOY, ROOT
from test_verify import A, L, series, snapshot

from chargeback.ledger import Ledger
from chargeback.plan import load_plan
from chargeback.record import RunRecord
from chargeback.summary import PlanSummary

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout installed into a folder of its own (its dependencies are this interpreter's)."""
    base = tmp_path_factory.mktemp("installed")
    source, wheels, target = base / "source", base / "wheels", base / "site"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".*", "runs", "reports", "build", "*.egg-info"))
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   capture_output=True, timeout=300)
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), *map(str, wheels.glob("*.whl"))],
                   check=True, capture_output=True, timeout=300)
    return target


def outside(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command run in a folder of the user's, with the installed package (not this checkout) importable."""
    env = {**os.environ, "PYTHONPATH": str(installed), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_wheel_holds_the_command_and_the_plugin(installed: Path, tmp_path: Path) -> None:
    command = outside(installed, str(installed / "bin" / "chargeback"), "--help", cwd=tmp_path)
    assert command.returncode == 0 and command.stdout.startswith("usage: chargeback [-h] {stack,demo,report,rules,limits}")
    module = outside(installed, sys.executable, "-m", "chargeback", "--help", cwd=tmp_path)
    assert module.stdout == command.stdout
    where = outside(installed, sys.executable, "-c", "import chargeback, checks, sim, users, scenarios; "
                    "print(chargeback.__file__)", cwd=tmp_path)
    assert where.stdout.strip() == str(installed / "chargeback" / "__init__.py"), where.stderr
    helped = outside(installed, sys.executable, "-m", "pytest", "--help", cwd=tmp_path)
    assert "chargeback: verify a load test's run record" in helped.stdout and "--run=DIR" in helped.stdout


def test_pytest_run_verifies_a_record_from_any_folder(installed: Path, tmp_path: Path) -> None:
    before = snapshot(at=90.0)
    after = snapshot(series(A, "freeuser1", 2.0, group="free"), series(L, "freeuser1", 1.0, group="free"), at=200.0)
    record = RunRecord.start(tmp_path / "runs", {"scenario": "seed-demo", "gateway_url": "http://gateway"},
                             PlanSummary.of(load_plan([DEPLOY])), {"before": before, "after": after})
    ledger = Ledger()
    for n, status in enumerate((200, 200, 429)):
        ledger.record("freeuser1", "free", 100.0 + n, 100.01 + n, status, None, 0)
    record.finish(ledger, complete=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = outside(installed, sys.executable, "-m", "pytest", "--run", str(tmp_path / "runs" / "latest"), "-p",
                     "no:cacheprovider", "-rs", cwd=elsewhere)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert f"chargeback: run {record.meta['run_id']} (scenario seed-demo), schema seed, counters from http://prom" in (
        result.stdout)
    assert "plugins: kuadrant-chargeback-loadtest-" in result.stdout and str(ROOT) not in result.stdout
    assert re.search(r"^=+ 9 passed, 4 skipped in ", result.stdout.splitlines()[-1]), result.stdout[-3000:]
