"""The deploy/ manifests parse, and the distributed Locust Jobs use only options Locust and the suite know."""
from __future__ import annotations

import re
import subprocess
import sys

import yaml
from test_plan import ROOT

DEPLOY_ROOT = ROOT / "deploy"


def test_every_manifest_parses() -> None:
    files = sorted(DEPLOY_ROOT.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        assert all(isinstance(doc, dict) for doc in yaml.safe_load_all(path.read_text()) if doc is not None), path


def test_distributed_locust_options_exist() -> None:
    jobs = [d for d in yaml.safe_load_all((DEPLOY_ROOT / "locust" / "locust.yaml").read_text()) if d["kind"] == "Job"]
    options = {arg for job in jobs for c in job["spec"]["template"]["spec"]["containers"] for arg in c["args"]
               if arg.startswith("-")}
    help_text = subprocess.run([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--help"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    custom = set(re.findall(r'add_argument\("(--[\w-]+)"', (ROOT / "users" / "options.py").read_text()))
    known = set(re.findall(r"(?<![\w-])(--?[\w-]+)", help_text)) | custom
    assert options and options <= known, options - known
    master = next(j for j in jobs if j["metadata"]["name"] == "locust-master")
    worker = next(j for j in jobs if j["metadata"]["name"] == "locust-worker")
    args = master["spec"]["template"]["spec"]["containers"][0]["args"]
    assert int(args[args.index("--expect-workers") + 1]) == worker["spec"]["parallelism"]
    dockerfile = (DEPLOY_ROOT / "locust" / "Dockerfile").read_text()
    for path in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (ROOT / path).exists() or path == ".", path
