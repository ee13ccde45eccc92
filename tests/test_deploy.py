"""The deploy/ manifests parse, and the distributed Locust Jobs use only options Locust and the suite know: the
master and workers find each other with exactly Locust's own `--master` and `--worker --master-host`, as the
distributed tests run them on hosts of their own (tests/test_distributed_hosts_e2e.py)."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib

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


def test_master_and_workers_meet_by_locusts_own_options_only() -> None:
    """`--master` on the master Job, `--worker --master-host locust-master` (the master's Service, on Locust's default
    port) on the workers, and no other way to point a worker at the master: no LOCUST_* environment, no other
    master option, no Locust configuration in the image."""
    docs = list(yaml.safe_load_all((DEPLOY_ROOT / "locust" / "locust.yaml").read_text()))
    jobs = {d["metadata"]["name"]: d["spec"]["template"] for d in docs if d["kind"] == "Job"}
    service = next(d for d in docs if d["kind"] == "Service")
    master, worker = (jobs[name]["spec"]["containers"] for name in ("locust-master", "locust-worker"))
    assert len(master) == len(worker) == 1
    master_args, worker_args = master[0]["args"], worker[0]["args"]
    assert "--master" in master_args and not {"--worker", "--master-host", "--master-port", "--processes"} & set(
        master_args)
    assert not {a for a in master_args if a.startswith("--master-bind")}  # listens on Locust's default, 5557
    assert worker_args == ["--worker", "--master-host", "locust-master"]
    assert service["metadata"]["name"] == "locust-master"
    assert service["spec"]["selector"].items() <= jobs["locust-master"]["metadata"]["labels"].items()
    assert {p["port"] for p in service["spec"]["ports"]} >= {5557}
    assert {c["containerPort"] for c in master[0]["ports"]} >= {5557}
    env = {e["name"] for template in jobs.values() for c in template["spec"]["containers"] for e in c.get("env", [])}
    assert env == {"CHARGEBACK_POLICY"}  # nothing such as LOCUST_MODE_WORKER or LOCUST_MASTER_NODE_HOST
    dockerfile = (DEPLOY_ROOT / "locust" / "Dockerfile").read_text()
    assert not re.search(r"^\s*ENV\b.*\bLOCUST_", dockerfile, re.M | re.I)
    copied = {path for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for path in line.split()[:-1]}
    assert not {"locust.conf", ".locust.conf"} & copied  # Locust reads these, and [tool.locust] of pyproject.toml
    assert "locust" not in tomllib.loads((ROOT / "pyproject.toml").read_text()).get("tool", {})
    assert re.findall(r"^ENTRYPOINT (.+)$", dockerfile, re.M) == ['["locust", "-f", "locustfile.py"]']
