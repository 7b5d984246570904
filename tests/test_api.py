"""The public Python API (fuzzkv.fuzz, fuzzkv.check, Result), the pytest plugin and the example a model library
would add: each run for real on tiny models."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fuzzkv
from fuzzkv.errors import UsageError
from tests.broken_models import off_by_one_positions

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BROKEN = "tests.broken_models:off_by_one_positions"


def subprocess_env(**variables: str) -> dict[str, str]:
    """The suite's environment (one torch thread: conftest) without fuzzkv's own variables, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUZZKV_", "TOYLIB_"))}
    return {**env, "PYTHONPATH": str(ROOT), **variables}


def without_timings(run: dict) -> dict:
    """A run's JSON without what differs between two runs of the same seed: wall-clock seconds."""
    kept = {k: v for k, v in run.items() if k != "seconds"}
    kept["oracles"] = {name: {k: v for k, v in entry.items() if k != "seconds"}
                       for name, entry in run["oracles"].items()}
    return kept


def test_fuzz_finds_shrinks_and_raises_with_the_minimal_case(tmp_path):
    result = fuzzkv.fuzz(BROKEN, oracles="decode", scale="tiny", max_examples=20)
    [finding] = result.findings
    assert finding.kind == "mismatch" and finding.oracle == "decode" and finding.lane == "hf"
    assert finding.case.prompts == ((0,),) and finding.case.max_new_tokens == 2  # the smallest case that shows it
    assert finding.diagnosis["first"]["layer"] == 0 and "positions" in finding.diagnosis["explanation"]
    assert not result.clean and result.exit_code() == 1
    with pytest.raises(fuzzkv.FindingsFound) as raised:
        result.raise_for_findings(repro_dir=tmp_path)
    [raised_finding] = raised.value.findings  # the finding, with where its script was saved
    assert isinstance(raised.value, AssertionError) and dataclasses.replace(raised_finding, script_path=None) == finding
    assert finding.case.to_json() in str(raised.value) and f"python {raised_finding.script_path}" in str(raised.value)
    assert Path(raised_finding.script_path).read_text() == finding.reproduction.rstrip() + "\n"


def test_a_clean_model_passes_and_says_what_it_tested():
    result = fuzzkv.fuzz("llama", oracles=["decode", "chunked"], scale="tiny", max_examples=15)
    assert result.clean and result.findings == () and result.examples >= 20
    result.raise_for_findings()  # returns: nothing to raise


def test_fuzz_results_equal_the_cli_json_for_the_same_seed_and_settings():
    # Both in a fresh process with one thread, so the same seed meets the same floating-point sums.
    api_side = (f"import json, fuzzkv; r = fuzzkv.fuzz({BROKEN!r}, oracles=['decode', 'chunked'], scale='tiny', "
                "max_examples=20, seed=3); print(json.dumps(r.json))")
    from_api = subprocess.run([sys.executable, "-c", api_side], capture_output=True, text=True, cwd=ROOT,
                              env=subprocess_env(), timeout=600)
    from_cli = subprocess.run([sys.executable, "-m", "fuzzkv", "run", "--model", BROKEN, "--oracle", "decode",
                               "--oracle", "chunked", "--scale", "tiny", "--max-examples", "20", "--seed", "3",
                               "--db", "memory:", "--json"], capture_output=True, text=True, cwd=ROOT,
                              env=subprocess_env(), timeout=600)
    assert from_cli.returncode == 1, from_cli.stderr
    api_run, cli_run = json.loads(from_api.stdout), json.loads(from_cli.stdout)
    assert len(cli_run["failures"]) == 2
    assert without_timings(api_run) == without_timings(cli_run)


def test_a_built_model_object_is_fuzzed_as_it_is_and_its_script_reproduces(tmp_path):
    model = off_by_one_positions()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    result = fuzzkv.fuzz(model, oracles="decode", max_examples=20)
    assert all(model.state_dict()[name].equal(tensor) for name, tensor in before.items())  # never re-initialised
    [finding] = result.findings
    assert result.model == "object tests.broken_models.OffByOnePositions"
    script = tmp_path / "repro.py"
    script.write_text(finding.reproduction)
    # The script loads fuzzkv's saved copy with the model's own class (which carries the bug).
    assert "from tests.broken_models import OffByOnePositions" in finding.reproduction
    ran = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                         env=subprocess_env(), timeout=600)
    assert ran.returncode == 1 and "FAILS" in ran.stdout, ran.stdout + ran.stderr


def test_check_runs_one_oracle_on_one_case():
    case = {"prompts": [[0]], "max_new_tokens": 2}
    broken = fuzzkv.check(BROKEN, case, scale="tiny")
    assert broken.failed and broken.kind == "mismatch" and broken.case == fuzzkv.Case(prompts=((0,),), max_new_tokens=2)
    clean = fuzzkv.check("llama", json.dumps(case), oracle="chunked", scale="tiny")
    assert clean.kind == "pass"


@pytest.mark.parametrize("call, message", [
    (lambda: fuzzkv.fuzz(42), "cannot fuzz a int"),
    (lambda: fuzzkv.fuzz(lambda: 42, max_examples=1), "the model factory returned int"),
    (lambda: fuzzkv.fuzz("llama", oracles="no-such-oracle"), "unknown oracle 'no-such-oracle'"),
    (lambda: fuzzkv.check("llama", {"prompts": []}, scale="tiny"), "not a fuzzkv case"),
    (lambda: fuzzkv.fuzz(off_by_one_positions(), workers=2, db="sqlite:///x.db"), "workers > 1 needs a model"),
])
def test_bad_input_is_one_usage_error(call, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        call()


def test_a_run_that_tested_nothing_raises_rather_than_passing():
    result = fuzzkv.fuzz("gpt2", backend="torchtune", scale="tiny", max_examples=5)
    assert result.untested and result.exit_code() == 5
    with pytest.raises(fuzzkv.UntestedRun, match="tested nothing"):
        result.raise_for_findings()


def test_importing_the_api_loads_no_torch():
    code = "import sys, fuzzkv; fuzzkv.fuzz; fuzzkv.check; import fuzzkv.pytest_plugin; print('torch' in sys.modules)"
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                         timeout=120)
    assert ran.stdout.strip() == "False", ran.stderr


def test_the_public_api_passes_mypy_strict():
    checked = ["fuzzkv/__init__.py", "fuzzkv/api.py", "fuzzkv/pytest_plugin.py"]
    ran = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", *checked],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr


# --- the pytest plugin and the example a model library adds ------------------------------------------


def run_pytest(target: Path, *options: str, cwd: Path = ROOT, **variables: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(target), *options], capture_output=True, text=True, cwd=cwd,
                          env=subprocess_env(**variables), timeout=900)


def reproduction_paths(output: str) -> list[Path]:
    """The saved scripts pytest's failure text names (the plugin saves each finding's script; it prints the path)."""
    paths = [Path(p) for p in re.findall(r"reproduce: python (\S+\.py) \(exits 1", output)]
    assert paths, output
    return paths


@pytest.mark.slow
def test_the_example_fails_on_the_planted_bug_with_case_and_script_and_passes_once_fixed(tmp_path):
    example = EXAMPLES / "test_toy_kv_cache.py"
    planted = run_pytest(example, "--fuzzkv-repro-dir", str(tmp_path / "saved"), TOYLIB_PLANT_CACHE_BUG="1")
    assert planted.returncode == 1, planted.stdout + planted.stderr
    assert "FindingsFound: fuzzkv found" in planted.stdout and "minimal case: {" in planted.stdout
    assert "root cause 1: seen by" in planted.stdout and "# fuzzkv reproduction" not in planted.stdout
    paths = reproduction_paths(planted.stdout)
    assert all(path.parent == tmp_path / "saved" for path in paths)
    script = paths[0].read_text()
    assert script.startswith("# fuzzkv reproduction: oracle") and "from toy_lib import tiny_toy" in script
    # The script pytest named reproduces the bug as it is, and passes on the fixed library.
    (tmp_path / "repro.py").write_text(script)
    for plant, code, verdict in (("1", 1, "FAILS"), ("0", 0, "passes")):
        env = subprocess_env(TOYLIB_PLANT_CACHE_BUG=plant, PYTHONPATH=f"{EXAMPLES}{os.pathsep}{ROOT}")
        ran = subprocess.run([sys.executable, str(tmp_path / "repro.py")], capture_output=True, text=True,
                             cwd=EXAMPLES, env=env, timeout=600)
        assert ran.returncode == code and verdict in ran.stdout, ran.stdout + ran.stderr
    fixed = run_pytest(example)
    assert fixed.returncode == 0 and "1 passed" in fixed.stdout, fixed.stdout + fixed.stderr


def test_the_plugin_options_reach_the_run_and_the_database_is_kept(tmp_path):
    (tmp_path / "test_model.py").write_text(
        "import json\nimport pytest\n\n\n"
        "@pytest.mark.fuzzkv(scale='tiny', oracles=['decode'])\n"
        "def test_model(fuzzkv):\n"
        "    result = fuzzkv('llama')\n"
        "    print('RESULT', json.dumps({'examples': result.json['settings']['max_examples'],\n"
        "                                'seed': result.json['settings']['seed'],\n"
        "                                'db': result.json['settings']['db_url']}))\n")
    db = tmp_path / "kept.db"
    ran = run_pytest(tmp_path, "-s", "--fuzzkv-max-examples", "7", "--fuzzkv-seed", "11", "--fuzzkv-db",
                     f"sqlite:///{db}", cwd=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    said = json.loads(ran.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert said == {"examples": 7, "seed": 11, "db": f"sqlite:///{db}"}
    assert db.exists()  # the store a CI caches between runs
    profile = run_pytest(tmp_path, "-s", "--fuzzkv-profile", "dev", cwd=tmp_path)
    assert json.loads(profile.stdout.split("RESULT ", 1)[1].splitlines()[0])["examples"] == 25, profile.stdout
