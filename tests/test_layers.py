"""The layering of ARCHITECTURE.md, at run time: commands that only parse or list load no torch,
and fuzzkv's own calls raise no deprecation warning on the installed transformers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import sys, runpy
sys.argv = ["fuzzkv", *{args!r}]
try:
    runpy.run_module("fuzzkv", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "transformer_lens", "sqlalchemy") if m in sys.modules)
print("LOADED=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["models"], ["replay", "--help"]])
def test_commands_that_only_parse_or_list_load_no_torch(args):
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    loaded = [line for line in result.stderr.splitlines() if line.startswith("LOADED=")]
    assert loaded == ["LOADED="], result.stderr
    assert result.stdout.strip()


def test_a_whole_run_raises_no_deprecation_warning_from_fuzzkv_calls(tmp_path):
    # Every warning category that announces an API change is an error: a call fuzzkv makes with an
    # argument the installed transformers has renamed (e.g. past_key_values -> cache in 5.24) fails the run.
    from tests.known_bugs import reset_keeps_keys_reason

    # Where DynamicCache.reset() keeps its keys (4.56-4.57, a finding), cache-reuse fails: the other oracles run.
    oracles = ["--oracle", "decode", "--oracle", "batch", "--oracle", "chunked", "--oracle", "cache-impl",
               "--oracle", "generate"] if reset_keeps_keys_reason() else []
    result = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning:transformers",
         "-m", "fuzzkv", "run", "--model", "llama", "--scale", "tiny", "--max-examples", "5", *oracles,
         "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FutureWarning" not in result.stderr and "deprecated" not in result.stderr.lower()
    data = json.loads(result.stdout)
    assert data["failures"] == [] and data["examples"] >= 5 * len(data["oracles"])


@pytest.mark.parametrize("backend", ["tl", "both"])
def test_the_hf_path_needs_no_transformer_lens_and_a_tl_run_names_its_extra(tmp_path, backend):
    # TransformerLens is the extra fuzzkv[tl] (it pulls wandb, datasets, pandas, pyarrow and its pytest plugins into
    # an install): a run of the HF backend never imports it, and a run that asks for it says how to install it.
    from tests.test_cli import fuzzkv_without

    db = f"sqlite:///{tmp_path / 'x.db'}"
    if backend == "tl":  # once: the HF run itself
        hf = fuzzkv_without("transformer_lens", "run", "--model", "llama", "--scale", "tiny", "--max-examples", "2",
                            "--oracle", "decode", "--db", db)
        assert hf.returncode == 0, hf.stdout + hf.stderr
    asked = fuzzkv_without("transformer_lens", "run", "--model", "llama", "--scale", "tiny", "--backend", backend,
                           "--db", db)
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert asked.stderr.strip().splitlines() == ["Error: --backend tl needs TransformerLens, which is not installed "
                                                 "(an extra of fuzzkv's). Tip: pip install 'fuzzkv[tl]'"]


def test_transformer_lens_is_an_extra_not_a_dependency():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [r for r in project["dependencies"] if r.startswith("transformer-lens")]
    assert project["optional-dependencies"]["tl"] == ["transformer-lens>=2.8"]



def test_loading_a_model_puts_the_hub_client_offline_whatever_was_imported_first():
    # The Hub client reads HF_HUB_OFFLINE once, at its own import: transformers imported first (as a user's code may)
    # would have kept it online had fuzzkv relied on setting the variable before importing transformers.
    code = ("import os; os.environ.pop('HF_HUB_OFFLINE', None)\n"
            "import transformers\n"
            "from huggingface_hub import constants\n"  # is_offline_mode() reads it (and older hubs have no such call)
            "assert not constants.HF_HUB_OFFLINE\n"
            "from fuzzkv.backends.loader import load_lanes\n"
            "from fuzzkv.config import RunConfig\n"
            "load_lanes(RunConfig(model='llama', scale='tiny', db_url='memory:'))\n"
            "assert constants.HF_HUB_OFFLINE and os.environ['HF_HUB_OFFLINE'] == '1'\n")
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
