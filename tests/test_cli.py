"""The command line: output checked by snapshots, bad input gets one line and exit 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fuzzkv.cli import cli

ROOT = Path(__file__).resolve().parent.parent


def fuzzkv(*args, cwd=None):
    """Run the installed CLI in a subprocess, as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


def fuzzkv_without(package, *args, cwd=None):
    """The CLI in a subprocess in which ``package`` is not installed, as Python sees a missing package: importing it
    raises ModuleNotFoundError and importlib.util.find_spec answers None (so libraries that probe for it, as
    transformers probes for accelerate, take their path for its absence; a stub package raising on import would not
    be found absent, and would fail inside transformers instead)."""
    program = f"import sys; sys.modules[{package!r}] = None; from fuzzkv.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=600)


def test_models_table(snapshot):
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0
    assert result.output == snapshot


def test_run_help_warns_that_factories_run_user_code(snapshot):
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=100)
    assert "runs your code by design" in " ".join(result.output.split())
    assert result.output == snapshot


def test_run_help_lists_every_exit_code_the_command_returns():
    from fuzzkv import errors

    text = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    codes = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert set(codes.values()) == {0, 1, 2, 3, 4, 5, 6, 130}  # a new code must be listed here and in the help
    for meaning, code in (("clean", 0), ("failures", 1), ("bad usage", 2), ("internal error", 3), ("blind", 4),
                          ("nothing tested", 5), ("incomplete", 6), ("interrupted", 130)):
        assert f"{code} {meaning}" in text, (code, meaning)


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "blom-560m"], "unknown model 'blom-560m'"),
    (["run", "--model", "tests.broken_models:"], "malformed factory"),
    (["run", "--model", "not a module:factory"], "malformed factory"),
    (["run", "--model", "no_such_module_xyz:make"], "cannot import 'no_such_module_xyz'"),
    (["run", "--model", "tests.broken_models:LONG_SEQUENCE"], "is not a callable"),
    (["run", "--model", "llama", "--max-examples", "0"], "--max-examples must be between 1"),
    (["run", "--model", "llama", "--max-time", "-5"], "--max-time must be between"),
    (["run", "--model", "llama", "--db", "nosuchdialect://x"], "cannot use database URL"),
    (["run", "--model", "llama", "--max-examples", "many"], "'many' is not a valid integer"),
    (["run", "--model", "llama", "--fail-on", "sometimes"], "'sometimes' is not one of"),
    (["run", "--model", "llama", "--report", "."], "is a directory"),
    (["run", "--mdoel", "llama"], "No such option '--mdoel'"),
    (["run", "--model", "llama", "--oracle", "cross"], "oracle cross does not run with --backend hf"),
    (["run", "--model", "llama", "--backend", "hf,vllm"], "unknown backend 'vllm' in --backend hf,vllm"),
    (["run", "--model", "llama", "--backend", "tl,torchtune", "--oracle", "cross"], "use --backend hf,tl or hf,torchtune"),
    (["run", "--model", "llama", "--backend", "tl", "--oracle", "generate"], "oracle generate does not run with"),
    (["run", "--model", "gpt2", "--scale", "tiny", "--max-prompt-len", "125", "--max-new-tokens", "8"],
     "133 positions, but gpt2 holds 128"),
    (["run", "--model", "llama", "--max-batch", "-3"], "--max-batch must be between 1"),
    (["run", "--model", "llama", "--deadline", "0"], "--deadline must be between"),
    (["run", "--model", "llama", "--workers", "0"], "0 is not in the range"),
    (["run", "--model", "llama", "--workers", "2", "--db", "memory:"], "--workers needs a database"),
    # A path-looking --model that is not there: the path is wrong, not a name (#32: it said "unknown model").
    (["run", "--model", "/no/such/dir"], "no such folder or file: /no/such/dir Tip: check the path"),
    (["run", "--model", "./no/such/dir"], "no such folder or file: ./no/such/dir"),
    (["run", "--model", "~/no/such/dir"], "no such folder or file: ~/no/such/dir"),
    (["run", "--model", "no_such_model.gguf"], "no such folder or file: no_such_model.gguf"),
    (["run", "--model", "no-such-org/no-such-model"], "no such folder or file: no-such-org/no-such-model Tip: nor "
                                                      "is it a hub id in the local HuggingFace cache"),
    (["run", "--model", "tests/raises_on_import.py"], "cannot load a model from tests/raises_on_import.py: not a "
                                                      "folder or a .gguf file"),
    (["run", "--model", "tests.raises_on_import:make"], "RuntimeError: this module is broken at import time"),
    (["run", "--model", "bert", "--scale", "tiny"], "bert is not a language model fuzzkv drives yet (encoder"),
    (["run", "--model", "qwen33", "--scale", "tiny"], "did you mean qwen3"),
    (["run", "--model", "llama_generic_missing"], "unknown model 'llama_generic_missing'"),
    (["sweep", "--models", "gpt2", "--shard", "5/3"], "--shard must be I/N with 1 <= I <= N, got 5/3"),
    (["sweep", "--models", "gpt2", "--shard", "two"], "--shard must be I/N, got 'two'"),
    (["sweep", "--models", ",,"], "names no model"),
    (["sweep", "--models", "@/no/such/list.txt"], "cannot read the model list /no/such/list.txt"),
    (["sweep", "--models", "gpt2", "--oracle", "cross"], "oracle cross does not run in a sweep"),
    (["sweep", "--models", "gpt2", "--workers", "0"], "--workers must be between 1 and 64"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, fault):
    fault("bad input", " ".join(args))
    result = fuzzkv(*args, "--db" if "--db" not in args else "--seed", *(
        [f"sqlite:///{tmp_path / 'x.db'}"] if "--db" not in args else ["0"]), cwd=ROOT)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "x.db").exists()  # bad input writes nothing


def test_models_json_needs_all():
    result = fuzzkv("models", "--json", cwd=ROOT)
    assert result.returncode == 2 and "--json needs --all" in result.stderr


def test_unknown_model_suggests_close_names():
    result = fuzzkv("run", "--model", "blom-560m", cwd=ROOT)
    assert "Tip: did you mean bloom-560m?" in result.stderr


@pytest.mark.parametrize("typo", ["lama", "gpt"])
def test_close_names_are_suggested_once_each_best_first(typo):
    # Registry names that are model types too (llama, gpt2) were suggested twice: "did you mean llama, llama, ...".
    from fuzzkv.errors import UsageError
    from fuzzkv.models.loading import load_model

    with pytest.raises(UsageError) as raised:
        load_model(typo, scale="tiny", seed=0, init_std=0.2, attn="eager")
    suggested = raised.value.tip.removeprefix("did you mean ").removesuffix("?").split(", ")
    assert len(suggested) >= 2 and len(set(suggested)) == len(suggested), raised.value.tip
    assert suggested[0] == {"lama": "llama", "gpt": "gpt2"}[typo]


def test_a_factory_returning_the_wrong_type_is_a_usage_error(tmp_path):
    (tmp_path / "wrongtype.py").write_text("def make():\n    return 42\n")
    env_root = f"{tmp_path}{os.pathsep}{ROOT}"
    result = subprocess.run([sys.executable, "-m", "fuzzkv", "run", "--model", "wrongtype:make"],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": env_root})
    assert result.returncode == 2
    assert "returned int, not a transformers PreTrainedModel" in result.stderr


def test_a_run_that_tested_nothing_says_so_and_exits_5(tmp_path):
    # torchtune has no GPT-2 builder (or is not installed): the only lane asked for is unsupported, no example runs.
    result = fuzzkv("run", "--model", "gpt2", "--scale", "tiny", "--backend", "torchtune", "--max-examples", "5",
                    "--db", f"sqlite:///{tmp_path}/db.sqlite", "--json")
    assert result.returncode == 5, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["examples"] == 0 and out["untested"] is True


def test_run_json_on_a_clean_tiny_model(tmp_path):
    db = tmp_path / "runs.db"
    result = fuzzkv("run", "--model", "llama", "--scale", "tiny", "--max-examples", "5", "--oracle", "decode",
                    "--oracle", "generate", "--db", f"sqlite:///{db}", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["failures"] == [] and data["examples"] >= 8
    assert set(data["versions"]) >= {"torch", "transformers", "hypothesis"}
    assert data["settings"]["model"] == "llama" and data["tolerance"]["value"] > 0
    assert db.exists()


def test_run_reports_a_shrunk_failure_with_a_reproduction(tmp_path):
    db = tmp_path / "runs.db"
    result = fuzzkv("run", "--model", "tests.broken_models:off_by_one_positions", "--oracle", "decode",
                    "--max-examples", "30", "--db", f"sqlite:///{db}", "--json", cwd=ROOT)
    assert result.returncode == 1, result.stderr
    [failure] = json.loads(result.stdout)["failures"]
    assert failure["oracle"] == "decode" and failure["kind"] == "mismatch"
    assert failure["max_abs_diff"] > failure["tolerance"]
    case = failure["case"]
    assert case["prompts"] == [[0]] and case["max_new_tokens"] == 2
    assert {"padding_side", "prefill_chunks", "cache", "dtype"} <= set(case)
    script = tmp_path / "repro.py"
    script.write_text(failure["reproduction"])
    repro = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert repro.returncode == 1, repro.stderr  # a script exits 1 when it reproduces
    assert "FAILS" in repro.stdout


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """``fuzzkv run`` on a tiny model folder written by save_pretrained, asked for ``--scale tiny`` (which a folder's
    model does not take: it runs at its own size), with its Markdown summary beside the folder."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    folder = tmp_path_factory.mktemp("folder") / "tiny-llama"
    hf_logging.disable_progress_bar()  # the test's own save: no bar in the test's output
    try:
        LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder)
    finally:
        hf_logging.enable_progress_bar()
    return fuzzkv("run", "--model", str(folder), "--scale", "tiny", "--max-examples", "2", "--oracle", "decode",
                  "--db", f"sqlite:///{folder.parent / 'runs.db'}", "--summary", str(folder.parent / "summary.md"),
                  cwd=folder.parent)


def test_loading_a_folder_shows_no_progress_bars(folder_run):
    # transformers draws "Loading weights: 100%|...| 12/12" on stderr for every from_pretrained.
    assert folder_run.returncode == 0, folder_run.stdout + folder_run.stderr
    assert "Loading weights" not in folder_run.stderr and "it/s]" not in folder_run.stderr, folder_run.stderr


def test_a_folders_run_says_it_ran_at_the_folders_size_not_the_scale_asked(folder_run):
    # --scale builds a registry name or a model type; a folder's weights are what they are. The header said
    # "(tiny scale)" for a folder's model run at its own size.
    assert folder_run.returncode == 0, folder_run.stdout + folder_run.stderr
    header = folder_run.stdout.splitlines()[0]
    assert "tiny-llama (its own size), backend hf" in header and "scale" not in header, header
    summary = (Path(folder_run.args[folder_run.args.index("--summary") + 1])).read_text()
    assert "tiny-llama (its own size, hf)" in summary and "tiny" not in summary.replace("tiny-llama", ""), summary


def test_a_missing_declared_dependency_is_one_line_naming_the_install_command(tmp_path, fault):
    # accelerate builds every random-weight model on transformers 5.x; without it a run ended "Internal error ...
    # please report" (exit 3).
    fault("bad input", "accelerate not installed")
    result = fuzzkv_without("accelerate", "run", "--model", "llama", "--scale", "tiny", "--max-examples", "2",
                            "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: the package accelerate is not installed") and "pip install 'accelerate>=0.26'" in line

