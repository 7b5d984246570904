"""The torchtune backend: built from the HF model through torchtune's own builders and converters, its cached
paths match its uncached ones and HF's on clean models, and torchtune-side bugs planted here are found and
shrunk: a cache written one position off while decoding, a converter that maps a norm to the wrong place, and
a cache reused at a smaller batch that reads stale rows silently. The real torchtune 0.6.1 bugs fuzzkv found
have their scripts in findings/ (tests/test_findings.py runs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzzkv.config import backend_option_for, backends_of, lanes_of
from fuzzkv.errors import UsageError
from tests.conftest import fuzz

ROOT = Path(__file__).resolve().parent.parent


def _torchtune_or_skip() -> None:
    """torchtune where CI installs it (a missing one fails there); a skip where a developer has not installed it."""
    try:
        import torchtune  # noqa: F401
    except ImportError:
        if os.environ.get("FUZZKV_CI"):
            raise
        pytest.skip("torchtune is not installed (pip install 'fuzzkv[torchtune]')")


def test_backend_lists_name_their_lanes_and_stored_lanes_name_their_backends():
    assert backends_of("both") == ("hf", "tl") and backends_of("hf, torchtune") == ("hf", "torchtune")
    assert lanes_of("hf,tl,torchtune") == {"hf", "tl", "torchtune", "cross", "cross-torchtune"}
    assert lanes_of("tl,torchtune") == {"tl", "torchtune"}  # cross compares with HF: only when hf is listed
    assert backend_option_for("cross") == "hf,tl" and backend_option_for("cross-torchtune") == "hf,torchtune"
    assert backend_option_for("torchtune") == "torchtune" and backend_option_for("vllm") is None
    with pytest.raises(UsageError, match="unknown backend 'vllm'"):
        backends_of("hf,vllm")


@pytest.mark.slow
def test_a_clean_model_passes_every_torchtune_oracle_and_cross():
    _torchtune_or_skip()
    finished, events, _ = fuzz("llama", backend="hf,torchtune", oracles=("decode", "batch", "chunked", "generate",
                                                                         "cross"), max_examples=25)
    assert finished.failures == []
    ran = {(e.oracle, e.lane) for e in events.of("OracleFinished")}
    assert {("decode", "torchtune"), ("batch", "torchtune"), ("chunked", "torchtune"), ("generate", "torchtune"),
            ("cross", "cross-torchtune")} <= ran
    assert all(e.examples >= 20 for e in events.of("OracleFinished") if e.lane != "hf")


def test_an_architecture_torchtune_cannot_build_is_reported_once_as_unsupported():
    _torchtune_or_skip()
    finished, events, _ = fuzz("gpt2", backend="hf,torchtune", oracles=("decode",), max_examples=3)
    [unsupported] = events.of("BackendUnsupported")
    assert unsupported.lane == "torchtune" and "torchtune has no builder for gpt2" in unsupported.reason
    assert finished.failures == []


def test_a_builder_without_the_sliding_window_keeps_cross_within_the_window():
    """torchtune's Mistral attends to the whole sequence (its builder says so): cross compares sequences the two
    compute the same function on; torchtune's own oracles run at any length."""
    _torchtune_or_skip()
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig

    lanes = load_lanes(RunConfig(model="mistral-7b", backend="hf,torchtune", scale="tiny", db_url="memory:"))
    assert lanes.lanes["cross-torchtune"].info.max_positions == 8  # the tiny twin's window
    assert lanes.lanes["torchtune"].info.sliding_windows == () and lanes.lanes["hf"].info.sliding_windows == (8,)
    assert "sliding-window attention" in lanes.description


# -- planted torchtune-side bugs ------------------------------------------------------------------------------

def _cache_written_one_position_late(monkeypatch):
    """A decode step's key and value land one slot past the step's position (the query never sees its own key)."""
    from torchtune.modules.kv_cache import KVCache

    original = KVCache.update

    def update(self, k_val, v_val):
        if k_val.shape[2] == 1 and 0 < self.size < self.k_cache.shape[2] - 1:  # a decode step with room
            where = self.cache_pos[:1] + 1
            self.k_cache[:, :, where] = k_val
            self.v_cache[:, :, where] = v_val
            self.cache_pos.add_(1)
            return self.k_cache, self.v_cache
        return original(self, k_val, v_val)

    monkeypatch.setattr(KVCache, "update", update)


def _stale_rows_at_a_smaller_batch(monkeypatch):
    """A cache set up for more rows than the batch: written into the first rows, read from the last; reset only
    rewinds (the rows read hold the previous batch's keys and values, silently)."""
    from torchtune.modules.kv_cache import KVCache

    original = KVCache.update

    def update(self, k_val, v_val):
        rows, length = k_val.shape[0], k_val.shape[2]
        if rows >= self.k_cache.shape[0]:
            return original(self, k_val, v_val)
        where = self.cache_pos[:length]
        self.k_cache[:rows, :, where] = k_val
        self.v_cache[:rows, :, where] = v_val
        self.cache_pos.add_(length)
        return self.k_cache[-rows:], self.v_cache[-rows:]

    monkeypatch.setattr(KVCache, "update", update)
    monkeypatch.setattr(KVCache, "reset", lambda self: self.cache_pos.sub_(self.size))


def _norms_swapped_in_conversion(monkeypatch):
    """The converter maps each layer's input norm to the feed-forward norm and back (a one-line mapping slip)."""
    from torchtune.models import convert_weights

    mapping = dict(convert_weights._FROM_HF)
    mapping["model.layers.{}.input_layernorm.weight"] = "layers.{}.mlp_norm.scale"
    mapping["model.layers.{}.post_attention_layernorm.weight"] = "layers.{}.sa_norm.scale"
    monkeypatch.setattr(convert_weights, "_FROM_HF", mapping)


@pytest.mark.slow
def test_a_cache_written_one_position_late_is_found_and_shrunk(monkeypatch):
    _torchtune_or_skip()
    _cache_written_one_position_late(monkeypatch)
    finished, _, store = fuzz("llama", backend="hf,torchtune", oracles=("decode",), max_examples=40)
    [failure] = finished.failures
    assert failure.lane == "torchtune" and failure.verdict.kind == "mismatch"
    case = failure.verdict.case
    assert case.batch_size == 1 and case.total_length <= 4  # the first decode steps show it
    assert store.failures()[0].diagnosis["first"]["layer"] == 0


@pytest.mark.slow
def test_a_norm_mapped_to_the_wrong_place_is_found_by_cross_and_placed_in_layer_0(monkeypatch):
    _torchtune_or_skip()
    _norms_swapped_in_conversion(monkeypatch)
    finished, _, store = fuzz("llama", backend="hf,torchtune", oracles=("cross", "decode"), max_examples=30)
    [failure] = finished.failures  # torchtune's model is wrong, but consistent with itself: only cross sees it
    verdict = failure.verdict
    assert failure.lane == "cross-torchtune" and verdict.kind == "mismatch"
    assert verdict.comparison in ("uncached: torchtune vs HF", "cached: torchtune vs HF")
    assert verdict.case.batch_size == 1 and verdict.case.total_length == 2  # one token fed shows it
    assert store.failures()[0].diagnosis["first"]["layer"] == 0


@pytest.mark.slow
def test_stale_rows_at_a_smaller_batch_are_found_silently_wrong_not_raised(monkeypatch):
    _torchtune_or_skip()
    _stale_rows_at_a_smaller_batch(monkeypatch)
    finished, _, _ = fuzz("llama", backend="hf,torchtune", oracles=("cache-reuse",), max_examples=60)
    [failure] = finished.failures
    assert failure.lane == "torchtune" and failure.verdict.kind == "mismatch"  # silent, where 0.6.1 itself raises
    case = failure.verdict.case
    # Minimal: a smaller batch than the cache's, and rows that differ (stale rows of the same prompt would agree).
    assert case.batch_size < case.reuse_batch <= 3 and case.max_new_tokens == 1


@pytest.mark.slow
def test_torchtune_0_6_1_raises_for_a_smaller_batch_and_the_script_reproduces_it(tmp_path):
    """The seed's bug class on the real library: caches set up for 2 rows, then 1 row, after reset_caches()."""
    _torchtune_or_skip()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "fuzzkv", "run", "--model", "qwen2.5-0.5b", "--backend", "torchtune", "--scale", "tiny",
         "--oracle", "cache-reuse", "--max-examples", "30", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    [failure] = json.loads(result.stdout)["failures"]
    assert failure["kind"] == "error" and "raised RuntimeError" in failure["error"]
    assert failure["case"]["prompts"] == [[0]] and failure["case"]["reuse_batch"] == 2
    script = tmp_path / "repro.py"
    script.write_text(failure["reproduction"])
    repro = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert repro.returncode == 1 and "RuntimeError" in repro.stderr, repro.stdout + repro.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("oracle", ["decode", "cross"])
def test_a_clean_torchtune_script_passes(oracle, tmp_path):
    """Reproduction scripts of the torchtune lanes run as is (transformers builds the weights, torchtune the
    model) and pass where fuzzkv found nothing: a script that cannot pass could not show a fix."""
    _torchtune_or_skip()
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.case import Case
    from fuzzkv.config import RunConfig
    from fuzzkv.oracles import ORACLES
    from fuzzkv.verdict import Bounds

    lanes = load_lanes(RunConfig(model="llama", backend="hf,torchtune", scale="tiny", db_url="memory:"))
    lane = lanes.lanes["torchtune" if oracle == "decode" else "cross-torchtune"]
    case = Case(prompts=((5, 6, 7), (8, 9)), padding_side="left", max_new_tokens=3, prefill_chunks=(1, 2))
    script = tmp_path / "repro.py"
    script.write_text(lane.reproduction(ORACLES[oracle], case, Bounds(2e-4)))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "torchtune" in result.stdout or oracle == "decode"
