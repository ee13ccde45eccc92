"""The chargeback recording rules: generated from the manifests, valid for promtool, exact in promtool's unit tests."""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
from test_plan import DEPLOY, ROOT, secret, write

from chargeback.plan import Price, load_plan
from chargeback.rules import main_rules, render_rules
from chargeback.schema import SCHEMAS

RULES = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")


def promtool(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_committed_rules_are_generated_from_the_manifests(schema: str) -> None:
    committed = (RULES / f"chargeback-rules-{schema}.yaml").read_text()
    assert committed == render_rules(load_plan([DEPLOY]), SCHEMAS[schema]), (
        f"regenerate: python -m chargeback rules --schema {schema} --out deploy/prometheus/chargeback-rules-{schema}.yaml")


@needs_promtool
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_promtool_checks_the_rules(schema: str) -> None:
    result = promtool("check", "rules", f"chargeback-rules-{schema}.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: " in result.stdout


@needs_promtool
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_promtool_unit_tests_pass(schema: str) -> None:
    result = promtool("test", "rules", f"tests/{schema}.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_promtool_unit_tests_fail_on_a_wrong_price(schema: str, tmp_path: Path) -> None:
    plan = load_plan([DEPLOY])
    premium = plan.tiers["premium"]
    plan.tiers["premium"] = dataclasses.replace(premium, price=Price(0.003, premium.price.per_1k_tokens))
    (tmp_path / f"chargeback-rules-{schema}.yaml").write_text(render_rules(plan, SCHEMAS[schema]))
    (tmp_path / "tests").mkdir()
    shutil.copy(RULES / "tests" / f"{schema}.test.yaml", tmp_path / "tests")
    result = promtool("test", "rules", f"tests/{schema}.test.yaml", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert 'expr: "chargeback:cost:by_tier"' in result.stdout + result.stderr


def test_rules_follow_other_manifests(tmp_path: Path) -> None:
    write(tmp_path, "gold.yaml", secret("golduser", "gold,beta"))
    write(tmp_path, "prices.yaml", """\
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: prices, labels: {chargeback.kuadrant.io/prices: "true"}}
        data: {gold.per_call: "0.25"}
        """)
    text = render_rules(load_plan([tmp_path]), SCHEMAS["seed"])
    assert 'label_replace(vector(0.25), "tier", "gold", "", "")' in text
    assert 'label_replace(label_replace(vector(1), "user", "golduser", "", ""), "tier", "gold", "", "")' in text
    assert "free" not in text and "premium" not in text


def test_a_user_with_two_tiers_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", secret("alice", "free"))
    write(tmp_path, "b.yaml", secret("alice", "premium", name="alice-second").replace("alice_key", "alice_key2"))
    with pytest.raises(ValueError, match=r"^user 'alice' has two tiers in the Plan: free and premium$"):
        render_rules(load_plan([tmp_path]), SCHEMAS["seed"])


def test_main_rules_writes_the_file_and_reports_unwritable_paths(tmp_path: Path) -> None:
    out = tmp_path / "rules.yaml"
    assert main_rules(argparse.Namespace(policy=[str(DEPLOY)], schema="fork", out=str(out))) == 0
    assert out.read_text() == (RULES / "chargeback-rules-fork.yaml").read_text()
    missing = tmp_path / "nowhere" / "rules.yaml"
    with pytest.raises(ValueError, match=rf"^{missing}: cannot write: No such file or directory$"):
        main_rules(argparse.Namespace(policy=None, schema="fork", out=str(missing)))


def test_rules_command_prints_the_committed_file() -> None:
    from test_cli_stack import run_cli

    result = run_cli("rules", "--schema", "fork")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / "deploy" / "prometheus" / "chargeback-rules-fork.yaml").read_text()
