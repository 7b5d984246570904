"""Every kind of generated reproduction script runs on the installed versions and reproduces its failure.

For each oracle, a planted bug and a case it breaks: fuzzkv's own check must fail, the script it
generates (torch + the libraries under test, never fuzzkv) must exit 1 and print the very
difference fuzzkv measured; the same script for the clean model must exit 0. CI runs this module
in every environment it builds (the newest transformers, 5.23, the oldest supported, and
TransformerLens 2.x), so a script kind that stops working on one of them fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from fuzzkv.backends.loader import load_lanes
from fuzzkv.case import Case
from fuzzkv.config import RunConfig
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from fuzzkv.verdict import Bounds
from tests.known_bugs import reset_keeps_keys_reason, tl_cache_bug_reason, tl_generate_ignores_padding

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "tests.broken_models:"
TOLERANCE = Bounds(1e-3, 1e-3)  # tiny float32 models: rounding noise ~1e-5, these planted bugs move logits by ~0.1-1

# oracle -> (planted bug breaking it, a case it breaks)
HF_CASES = {
    "decode": ("off_by_one_positions", Case(prompts=((0, 1),), max_new_tokens=3)),
    "chunked": ("off_by_one_positions", Case(prompts=((5, 6, 7, 8),), max_new_tokens=2, prefill_chunks=(2, 2))),
    "batch": ("mask_dropped_when_cached", Case(prompts=((1, 2, 3), (4,)), max_new_tokens=3)),
    "cache-impl": ("static_cache_off_by_one", Case(prompts=((3, 4),), max_new_tokens=3, cache="static")),
    "cache-reuse": ("stale_after_smaller_batch", Case(prompts=((3, 4),), max_new_tokens=3, reuse_batch=3)),
    "generate": ("off_by_one_positions", Case(prompts=((0,),), max_new_tokens=3)),
}
# The cache-reuse bug where only a static cache can be reset (transformers before 4.56).
STATIC_RESET_CASE = ("stale_after_reset", Case(prompts=((3, 4),), max_new_tokens=3, cache="static", reuse_batch=1))


def lane_of(model: str, backend: str, lane: str):
    lanes = load_lanes(RunConfig(model=model, backend=backend, scale="tiny", db_url="memory:"))
    if lane not in lanes.lanes:
        pytest.skip(f"lane {lane} is not available here: {lanes.unsupported.get(lane.replace('cross', 'tl'))}")
    return lanes.lanes[lane]


def execute(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "repro.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # for the tests.* factories, as a user's own module would be
    return subprocess.run([sys.executable, str(path)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)


def printed_differences(stdout: str) -> list[float]:
    return [float(m) for m in re.findall(r"max \|logit difference\| ([0-9.e+-]+|inf)", stdout)]


def printed_rms(stdout: str) -> list[float]:
    return [float(m) for m in re.findall(r"\), rms ([0-9.e+-]+|inf) ", stdout)]


def assert_reproduces(lane, oracle: str, case: Case, tmp_path: Path) -> None:
    verdict = check(ORACLES[oracle], lane, case, TOLERANCE)
    assert verdict.failed, f"the planted bug no longer breaks {oracle} on {case.describe()}"
    script = lane.reproduction(ORACLES[oracle], case, TOLERANCE)
    assert not re.search(r"^\s*(import|from) fuzzkv\b", script, re.MULTILINE), "a script must not need fuzzkv"
    result = execute(script, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    if verdict.kind == "mismatch":
        assert "FAILS" in result.stdout
        worst = max(printed_differences(result.stdout))
        assert worst == pytest.approx(verdict.metrics.max_abs_diff, rel=1e-3), result.stdout
        assert max(printed_rms(result.stdout)) == pytest.approx(verdict.metrics.rms_diff, rel=1e-3), result.stdout
    else:  # an exception in a path: the script ends with the same exception
        assert verdict.error_type in result.stderr, result.stderr[-3000:]


def assert_passes(lane, oracle: str, case: Case, tmp_path: Path) -> None:
    assert not check(ORACLES[oracle], lane, case, TOLERANCE).failed
    result = execute(lane.reproduction(ORACLES[oracle], case, TOLERANCE), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "FAILS" not in result.stdout and printed_differences(result.stdout)


def test_a_generate_script_calls_generate_with_the_cache_implementation_the_failing_run_drew(tmp_path):
    lane = lane_of(BROKEN + "static_cache_off_by_one", "hf", "hf")
    case = Case(prompts=((3, 4),), max_new_tokens=3, settings={"cache_implementation": "static"})
    assert "GENERATE_CACHE = 'static'" in lane.reproduction(ORACLES["generate"], case, TOLERANCE)
    assert_reproduces(lane, "generate", case, tmp_path)
    # "default": no cache_implementation at all (on 4.x a forced "dynamic" would be another cache than generate's)
    default = Case(prompts=((3, 4),), max_new_tokens=3, settings={"cache_implementation": "default"})
    assert "GENERATE_CACHE = None" in lane.reproduction(ORACLES["generate"], default, TOLERANCE)


@pytest.mark.parametrize("oracle", HF_CASES)
def test_hf_scripts_reproduce_each_oracle_failure_and_pass_on_the_clean_model(oracle, tmp_path):
    bug, case = HF_CASES[oracle]
    broken = lane_of(BROKEN + bug, "hf", "hf")
    if oracle == "cache-reuse" and case.cache not in (broken.capabilities.reset_caches or (case.cache,)):
        # Before transformers 4.56 only a static cache can be reset (for its own batch size): the reuse bug there.
        bug, case = STATIC_RESET_CASE
        broken = lane_of(BROKEN + bug, "hf", "hf")
    if not broken.capabilities.allows(ORACLES[oracle].min_batch, ORACLES[oracle].needs):
        pytest.skip(f"{oracle} needs {set(ORACLES[oracle].needs)}, which this transformers does not offer")
    assert_reproduces(broken, oracle, case, tmp_path)
    clean = lane_of(BROKEN + "clean", "hf", "hf")
    if oracle == "cache-reuse" and reset_keeps_keys_reason():
        # This release's DynamicCache.reset() keeps its zeroed keys: the clean model's script shows that real bug,
        # and a static cache (reset by zeroing, which is right for it) reused for its own batch size passes.
        assert_reproduces(clean, oracle, case, tmp_path)
        case = Case(prompts=((3, 4),), max_new_tokens=3, cache="static")
    assert_passes(clean, oracle, case, tmp_path)


def test_hf_script_of_a_registry_model_rebuilds_its_random_weights(tmp_path):
    # A registry model's script rebuilds the weights from the config and seed: it must agree with fuzzkv
    # (here: a clean pass, with the very logits fuzzkv computed).
    assert_passes(lane_of("gpt2", "hf", "hf"), "decode", Case(prompts=((1, 2, 3), (4,)), max_new_tokens=2), tmp_path)


TL_CASE = Case(prompts=((0,),), max_new_tokens=2)


@pytest.mark.parametrize("oracle, lane", [("tl-decode", "tl"), ("cross", "cross")])
def test_transformerlens_scripts_reproduce_a_transformerlens_side_bug(oracle, lane, tmp_path):
    tl = pytest.importorskip("transformer_lens")
    release = tuple(int(part) for part in metadata.version("transformer-lens").split(".")[:2])
    if release < (2, 9):
        # TransformerLens 2.x before PR #777: its real Bloom cache bug is the failure to reproduce.
        assert_reproduces(lane_of("bloom-560m", "both", lane), oracle, TL_CASE, tmp_path)
        return
    del tl
    # Later releases: the factory plants a TransformerLens-side bug at import (subprocess only): Bloom's ALiBi
    # sliced one row off on TransformerBridge (4.x), a wrong attention scale on cached calls on HookedTransformer.
    assert_planted_bug_reproduces(oracle, lane, "TL_CASE", tmp_path)


def assert_planted_bug_reproduces(oracle: str, lane: str, case: str, tmp_path: Path) -> None:
    """The planted TransformerLens-side bug (tests/broken_tl.py) breaks ``oracle`` on the case named ``case`` and
    its script reproduces it, in a subprocess (the plant patches TransformerLens for the whole process)."""
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(oracle=oracle, lane=lane, case=case)], capture_output=True, text=True,
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "REPRO_DIR": str(tmp_path)}, timeout=900)
    assert probe.returncode == 0, probe.stdout + probe.stderr[-3000:]


# Runs in a subprocess: importing tests.broken_tl patches TransformerLens for the whole process.
PROBE = """
import os
from pathlib import Path
import tests.broken_tl  # noqa: F401
from tests.test_repro_scripts import assert_reproduces, lane_of, {case}
lane = lane_of("tests.broken_tl:make", "both", {lane!r})
assert_reproduces(lane, {oracle!r}, {case}, Path(os.environ["REPRO_DIR"]))
print("reproduced")
"""

# A padded batch whose cached calls let TransformerLens 2.x/3.x infer the padding from the pad token.
INFERRED_CASE = Case(prompts=((13, 14, 15), (16,)), max_new_tokens=2, settings={"padding_mode": "inferred"})  # no pad id


def test_legacy_transformerlens_scripts_run_the_inferred_padding_mode(tmp_path):
    pytest.importorskip("transformer_lens")
    release = tuple(int(part) for part in metadata.version("transformer-lens").split(".")[:2])
    if release >= (4, 0):
        pytest.skip("TransformerBridge takes HF's mask: no padding inference mode")
    script = lane_of("llama", "both", "tl").reproduction(ORACLES["tl-decode"], INFERRED_CASE, TOLERANCE)
    assert "infer_pad_id=PAD" in script and "hooked_generate_batch(" in script  # generate() on the batch whole
    if tl_generate_ignores_padding():  # 2.13-3.0: generate() attends to the padding, a real bug the script shows
        assert_reproduces(lane_of("llama", "both", "tl"), "tl-decode", INFERRED_CASE, tmp_path)
        return
    # Clean: the script passes, on 2.8.1 too (an inferred mask is stored in the cache there; a passed one is not).
    assert_passes(lane_of("llama", "both", "tl"), "tl-decode", INFERRED_CASE, tmp_path)
    if release < (2, 9):  # the real Bloom cache bug, in this mode too
        assert_reproduces(lane_of("bloom-560m", "both", "tl"), "tl-decode", INFERRED_CASE, tmp_path)
        return
    assert_planted_bug_reproduces("tl-decode", "tl", "INFERRED_CASE", tmp_path)


@pytest.mark.parametrize("oracle, lane", [("tl-decode", "tl"), ("cross", "cross"), ("batch", "tl"), ("chunked", "tl")])
def test_transformerlens_scripts_pass_on_a_clean_model(oracle, lane, tmp_path):
    pytest.importorskip("transformer_lens")
    reason = tl_cache_bug_reason(padded=oracle == "batch")  # the other cases are one unpadded row
    if reason:
        pytest.skip(reason)
    subject = lane_of("llama", "both", lane)
    case = Case(prompts=((3, 4, 5), (6,)), max_new_tokens=2) if oracle == "batch" else \
        Case(prompts=((3, 4, 5, 6),), max_new_tokens=2, prefill_chunks=(2, 2))
    if subject.capabilities.max_batch is not None and case.batch_size > subject.capabilities.max_batch:
        case = Case(prompts=((3, 4, 5, 6),), max_new_tokens=2, prefill_chunks=(2, 2))
    assert_passes(subject, oracle, case, tmp_path)
