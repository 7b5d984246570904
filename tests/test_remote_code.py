"""A model folder that ships its own code (its config.json's auto_map) runs that code only with --trust-remote-code:
refused in one line without it (none of its code runs), fuzzed as its own class with it, and the run's script and
replay load it the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.test_cli import ROOT

MARKER = "folder-code-ran"  # each of the folder's modules appends its name here when it is imported

CONFIGURATION = '''
from transformers import LlamaConfig

with open({marker!r}, "a") as ran:
    ran.write("configuration_tiny\\n")


class TinyConfig(LlamaConfig):
    model_type = "tinyremote"
'''

# The planted bug, as tests.broken_models.LogitOffsetWhenCached: cached steps' logits move by 0.35 (about 5% of the
# tiny model's logit scale) once the cache holds tokens. Its stock LlamaForCausalLM twin is clean.
MODELING = '''
from transformers import LlamaForCausalLM

from .configuration_tiny import TinyConfig

with open({marker!r}, "a") as ran:
    ran.write("modeling_tiny\\n")


class TinyForCausalLM(LlamaForCausalLM):
    config_class = TinyConfig

    def forward(self, *args, **kwargs):
        # The cache comes as ``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier).
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        out = super().forward(*args, **kwargs)
        if cache is not None and int(cache.get_seq_length()) > out.logits.shape[1]:
            out.logits = out.logits + 0.35
        return out
'''


def remote_code_folder(root):
    """A folder as a hub repository with custom code is: the tiny registry Llama's weights (safetensors), saved by
    the stock class, and config.json naming TinyForCausalLM, defined by modeling_tiny.py beside it (auto_map)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from fuzzkv import registry
    from fuzzkv.backends.hf.paths import sensitise

    folder = root / "tiny-remote"
    spec = registry.get("llama").config_for("tiny")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in spec.items() if k != "model_type"}))
    sensitise(model, 0.2)
    hf_logging.disable_progress_bar()  # the test's own save: no bar in the test's output
    try:
        model.save_pretrained(folder, safe_serialization=True)
    finally:
        hf_logging.enable_progress_bar()
    marker = str(root / MARKER)
    (folder / "configuration_tiny.py").write_text(CONFIGURATION.format(marker=marker))
    (folder / "modeling_tiny.py").write_text(MODELING.format(marker=marker))
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="tinyremote", architectures=["TinyForCausalLM"],
                  auto_map={"AutoConfig": "configuration_tiny.TinyConfig",
                            "AutoModelForCausalLM": "modeling_tiny.TinyForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    assert not any(folder.glob("*.bin"))  # safetensors only: the flag never lets a pickle load
    return folder


def run(cwd, *args):
    """A command in a subprocess from ``cwd``, its dynamic modules (the folder's code, copied by transformers when
    it runs it) kept under ``cwd``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(cwd / "hf-modules")}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


RUN = ("--scale", "tiny", "--max-examples", "20", "--oracle", "decode")


def test_a_folder_shipping_its_own_code_is_refused_in_one_line_and_none_of_its_code_runs(tmp_path):
    folder = remote_code_folder(tmp_path)
    refused = run(tmp_path, "-m", "fuzzkv", "run", "--model", str(folder), *RUN, "--db", "sqlite:///a.db")
    assert refused.returncode == 2, refused.stdout + refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), refused.stderr
    assert "TinyForCausalLM" in lines[0] and "pass --trust-remote-code to run the code shipped in the folder" in lines[0]
    assert "with your permissions" in lines[0], lines[0]
    assert not (tmp_path / MARKER).exists(), (tmp_path / MARKER).read_text()
    assert not (tmp_path / "a.db").exists()  # refused before any store is made


@pytest.fixture(scope="module")
def trusted_run(tmp_path_factory):
    """One run of the folder with --trust-remote-code (exit code, output), and where it ran."""
    root = tmp_path_factory.mktemp("trusted")
    folder = remote_code_folder(root)
    found = run(root, "-m", "fuzzkv", "run", "--model", str(folder), "--trust-remote-code", *RUN,
                "--db", "sqlite:///x.db")
    return root, found


def test_with_trust_remote_code_the_folders_own_class_is_fuzzed_and_its_bug_found(trusted_run):
    root, found = trusted_run
    assert found.returncode == 1, found.stdout[-3000:] + found.stderr[-3000:]
    assert "with the folder's own code (--trust-remote-code)" in found.stdout, found.stdout[:2000]
    assert "decode" in found.stdout and "FAILURE" in found.stdout, found.stdout[-3000:]
    ran = (root / MARKER).read_text().split()
    assert "modeling_tiny" in ran and "configuration_tiny" in ran, ran


def test_the_runs_script_loads_the_folders_code_as_the_run_did_and_reproduces_the_bug(trusted_run):
    root, found = trusted_run
    assert found.returncode == 1, found.stdout[-3000:] + found.stderr[-3000:]
    shown = run(root, "-m", "fuzzkv", "show", "1", "--script", "--db", "sqlite:///x.db")
    assert shown.returncode == 0, shown.stderr
    assert "trust_remote_code=True" in shown.stdout and "--trust-remote-code" in shown.stdout
    script = root / "repro.py"
    script.write_text(shown.stdout)
    (root / MARKER).unlink()
    reproduced = run(root, str(script))
    assert reproduced.returncode == 1, reproduced.stdout + reproduced.stderr[-3000:]
    assert "FAILS" in reproduced.stdout, reproduced.stdout
    assert "modeling_tiny" in (root / MARKER).read_text().split()  # the folder's class, not the stock Llama


def test_replay_runs_the_folders_code_only_when_given_the_switch_itself(trusted_run):
    root, found = trusted_run
    assert found.returncode == 1, found.stdout[-3000:] + found.stderr[-3000:]
    (root / MARKER).unlink(missing_ok=True)
    skipped = run(root, "-m", "fuzzkv", "replay", "--db", "sqlite:///x.db")  # the stored run's flag is not enough
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr[-2000:]
    assert "--trust-remote-code" in skipped.stdout, skipped.stdout
    assert not (root / MARKER).exists()
    replayed = run(root, "-m", "fuzzkv", "replay", "--trust-remote-code", "--db", "sqlite:///x.db")
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr[-2000:]
    assert "modeling_tiny" in (root / MARKER).read_text().split()
