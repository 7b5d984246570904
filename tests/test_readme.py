"""The README's Python and pytest sections are executed as written, so they cannot rot; its action examples
name only the action's declared inputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def section(heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", README, re.S | re.M)
    assert match, heading
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def subprocess_env() -> dict[str, str]:
    """The suite's environment (one torch thread: conftest) without fuzzkv's own variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUZZKV_")}
    return {**env, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_the_python_api_section_runs_as_written(tmp_path):
    code = "\n".join(blocks(section("Python API"), "python"))
    assert "fuzzkv.fuzz(" in code and "fuzzkv.check(" in code
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=subprocess_env(), timeout=900)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # What its comments promise: the finding's summary, minimal case and diagnosis, and a script that reproduces.
    assert "decode (cached vs uncached): max |diff|" in ran.stdout and '"prompts": [[0]]' in ran.stdout
    script = subprocess.run([sys.executable, "repro.py"], capture_output=True, text=True, cwd=tmp_path,
                            env=subprocess_env(), timeout=600)
    assert script.returncode == 1 and "FAILS" in script.stdout, script.stdout + script.stderr


@pytest.mark.slow
def test_the_pytest_section_runs_as_written(tmp_path):
    [test_module] = blocks(section("pytest"), "python")
    (tmp_path / "test_readme_example.py").write_text(test_module)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=900)
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout + ran.stderr


def test_the_action_examples_use_only_declared_inputs():
    declared = set(yaml.safe_load((ROOT / "action.yml").read_text())["inputs"])
    examples = [yaml.safe_load(block) for block in blocks(section("Nightly fuzzing in CI"), "yaml")]
    uses = [step for workflow in examples for job in workflow["jobs"].values() for step in job["steps"]
            if step.get("uses", "").startswith("fuzzkv/fuzzkv@")]
    assert len(uses) == 2 and {step["with"].get("mode", "fuzz") for step in uses} == {"fuzz", "replay"}
    for step in uses:
        assert set(step["with"]) <= declared, set(step["with"]) - declared
