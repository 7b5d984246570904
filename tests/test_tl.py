"""The TransformerLens backend: clean models run clean, and the Bloom and Gemma-2 bug classes
are found and shrunk when planted on the TransformerLens side only (HF stays correct)."""

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from fuzzkv.backends.loader import load_lanes
from fuzzkv.config import RunConfig
from fuzzkv.db import MemoryStore
from fuzzkv.runner import run
from tests.conftest import Recorder
from tests.known_bugs import tl_cache_bug_reason

# Tests that need TransformerLens's cache to work: on a combination with a known cache bug they run
# in another CI environment (see tests/known_bugs.py), and tests/test_findings.py checks the bug is found.
pytestmark = pytest.mark.skipif(int(metadata.version("transformer-lens").split(".")[0]) < 4,
                                reason="TransformerBridge tests (TransformerLens 2.x/3.x: tests/test_tl_legacy.py)")
needs_working_tl_cache = pytest.mark.skipif(tl_cache_bug_reason() is not None, reason=str(tl_cache_bug_reason()))

ROOT = Path(__file__).resolve().parent.parent


def fuzz_lanes(model, breaker=None, **options):
    """Run with --backend both on a tiny model, after ``breaker`` mutates the TransformerLens side."""
    options.setdefault("max_examples", 25)
    config = RunConfig(model=model, backend="both", scale="tiny", db_url="memory:", **options)
    lanes = load_lanes(config)
    if breaker is not None:
        breaker(lanes.lanes["tl"].backends[0].bridge)
    recorder = Recorder()
    return run(config, MemoryStore(), recorder.append, lanes), recorder


def modules_named(bridge, class_name):
    return [m for m in bridge.modules() if type(m).__name__ == class_name]


def alibi_from_wrong_rows_when_cached(bridge):
    """Bloom on TransformerLens: with a cache in use, the ALiBi bias is sliced one row off."""
    attentions = modules_named(bridge, "BloomAttentionBridge")
    for attention in attentions:
        # A class swap, not a patched method: the float64 copy used for calibration keeps the bug.
        attention.__class__ = _broken_subclass(type(attention), "_reconstruct_attention", _alibi_off_by_one_row)
    assert attentions


def _alibi_off_by_one_row(self, q, k, v, **kwargs):
    alibi = kwargs.get("alibi")
    if alibi is not None and alibi.shape[-1] > q.shape[1]:  # more keys than queries: a cache is in use
        kwargs["alibi"] = torch.cat([alibi[..., 1:], alibi[..., -1:]], dim=-1)
    return super(type(self), self)._reconstruct_attention(q, k, v, **kwargs)


def _broken_subclass(cls, method_name, method):
    return type(f"Broken{cls.__name__}", (cls,), {method_name: method})


def attention_scale_224_not_256(bridge):
    """Gemma-2 on TransformerLens: the query scale uses 224 where the config says 256 (the real bug's ratio)."""
    attentions = modules_named(bridge, "PositionEmbeddingsAttentionBridge")
    for attention in attentions:
        hf_attention = attention.original_component
        scalar = hf_attention.config.query_pre_attn_scalar
        hf_attention.scaling = (scalar * 224 / 256) ** -0.5
    assert attentions


def cache_silently_ignored(bridge):
    """A TransformerLens that accepts past_key_values and computes without it (as legacy arguments do)."""
    bridge.__class__ = _broken_subclass(type(bridge), "forward", _forward_forgetting_the_cache)


def _forward_forgetting_the_cache(self, *args, **kwargs):
    if kwargs.pop("past_key_values", None) is not None:
        kwargs["use_cache"] = True
    return super(type(self), self).forward(*args, **kwargs)


@needs_working_tl_cache
@pytest.mark.parametrize("model", ["bloom-560m", "gemma-2-2b", "gpt2", "llama", "mistral-7b"])
def test_backend_both_runs_clean(model):
    finished, recorder = fuzz_lanes(model)
    assert [f.verdict.summary() for f in finished.failures] == []
    lanes_run = {(e.oracle, e.lane) for e in recorder.of("OracleFinished")}
    assert {("tl-decode", "tl"), ("cross", "cross"), ("batch", "tl"), ("decode", "hf")} <= lanes_run
    assert recorder.of("BackendUnsupported") == []


@needs_working_tl_cache
def test_bloom_alibi_cached_bug_is_found_and_shrunk():
    finished, _ = fuzz_lanes("bloom-560m", alibi_from_wrong_rows_when_cached, oracles=("tl-decode", "cross"),
                             max_examples=60)
    by_oracle = {f.verdict.oracle: f.verdict for f in finished.failures}
    assert set(by_oracle) == {"tl-decode", "cross"}
    assert all(f.lane != "hf" for f in finished.failures)
    tl = by_oracle["tl-decode"]
    assert tl.kind == "mismatch" and tl.comparison in ("forward with past_key_values", "generate(use_past_kv_cache=True)")
    # Minimal: one one-token prompt, and the first cached decode step breaks.
    assert tl.case.prompts == ((0,),) and tl.case.max_new_tokens == 2
    assert by_oracle["cross"].comparison == "cached: TransformerLens vs HF"


@needs_working_tl_cache
def test_gemma2_attention_scale_bug_is_found_by_cross_and_shrunk():
    finished, _ = fuzz_lanes("gemma-2-2b", attention_scale_224_not_256, oracles=("cross", "tl-decode"),
                             max_examples=60)
    [failure] = finished.failures  # cached and uncached TL agree with each other: only cross sees it
    verdict = failure.verdict
    assert verdict.oracle == "cross" and verdict.kind == "mismatch"
    assert verdict.case.batch_size == 1
    assert verdict.case.total_length == 3  # two positions attended: one key alone hides any scale


def test_a_cache_that_is_silently_not_used_is_an_error_finding():
    finished, _ = fuzz_lanes("llama", cache_silently_ignored, oracles=("tl-decode",), max_examples=20)
    [failure] = finished.failures
    assert failure.verdict.kind == "error"
    assert "cache did not grow" in failure.verdict.error and failure.verdict.error_type == "SilentlyUncached"


def test_an_architecture_transformerlens_does_not_support_is_reported_once(tmp_path):
    (tmp_path / "biogpt.py").write_text(
        "import torch\n"
        "from transformers import BioGptConfig, BioGptForCausalLM\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return BioGptForCausalLM(BioGptConfig(vocab_size=128, hidden_size=32, num_hidden_layers=1,\n"
        "        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)).eval()\n")
    result = subprocess.run(
        [sys.executable, "-m", "fuzzkv", "run", "--model", "biogpt:make", "--backend", "tl", "--max-examples", "3",
         "--db", f"sqlite:///{tmp_path / 'x.db'}"], capture_output=True, text=True, cwd=tmp_path, timeout=600,
        env={"PYTHONPATH": str(ROOT), **os.environ})
    assert result.returncode == 5, result.stderr  # the only lane asked for is unsupported: nothing was tested
    assert result.stdout.count("unsupported by backend tl: TransformerLens") == 1
    assert "does not support BioGptForCausalLM" in result.stdout and "FAILURE" not in result.stdout
    assert "NOTHING TESTED" in result.stdout


@needs_working_tl_cache
def test_cli_finds_a_transformerlens_side_bug_and_its_script_reproduces_it(tmp_path):
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = subprocess.run(
        [sys.executable, "-m", "fuzzkv", "run", "--model", "tests.broken_tl:make", "--backend", "tl",
         "--oracle", "tl-decode", "--max-examples", "40", "--db", db, "--json"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 1, result.stderr
    [failure] = json.loads(result.stdout)["failures"]
    assert failure["backend"] == "tl" and failure["case"]["prompts"] == [[0]]
    script = tmp_path / "repro.py"
    script.write_text(failure["reproduction"])
    repro = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, env=env,
                           timeout=300)
    assert repro.returncode == 1, repro.stderr
    assert "FAILS" in repro.stdout
    replayed = subprocess.run([sys.executable, "-m", "fuzzkv", "replay", "--db", db], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=600)
    assert replayed.returncode == 1 and "STILL FAILS" in replayed.stdout
