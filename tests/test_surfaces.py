"""The cache-surface oracles (beam, prefix-reuse, continuous-batching) find a planted bug in their surface and
shrink it, pass on the clean model, and their reproduction scripts reproduce what they found."""

import subprocess
import sys

import pytest

from fuzzkv.backends.hf.paths import quantizers, transformers_major
from fuzzkv.case import Case
from fuzzkv.oracles import ORACLES
from tests.conftest import fuzz
from tests.known_bugs import scripted_reason as known_bug

pytestmark = pytest.mark.skipif(transformers_major() < 5, reason="the cache surfaces are driven on transformers 5.x")

SURFACES = ("beam", "prefix-reuse", "continuous-batching", "assisted", "attn-impl")
BUDGET = 50


def failures(finished):
    return {f.verdict.oracle: f.verdict for f in finished.failures}


def test_surface_oracles_are_opt_in_and_pass_on_the_clean_model():
    assert not any(ORACLES[name].default for name in SURFACES)
    # assisted decoding has a real transformers 5.24 bug on the clean model (below), so it is checked there.
    clean = tuple(name for name in SURFACES if name != "assisted")
    finished, recorder, _ = fuzz("tests.broken_surfaces:clean", oracles=clean, max_examples=25)
    assert not finished.failures, [f.verdict.summary() for f in finished.failures]
    ran = {e.oracle: e.examples for e in recorder.of("OracleFinished")}
    assert set(ran) == set(clean) and all(n >= 10 for n in ran.values()), ran


def test_a_crop_that_forgets_a_layer_is_found_by_assisted_decoding():
    finished, _, _ = fuzz("tests.broken_surfaces:crop_forgets_last_layer", oracles=("assisted",), max_examples=BUDGET)
    on_dynamic = [f.verdict for f in finished.failures if f.verdict.case.cache == "dynamic"]
    assert on_dynamic, [f.verdict.summary() for f in finished.failures]  # a dynamic cache has no transformers bug here
    assert all(v.case.batch_size == 1 for v in on_dynamic)


@pytest.mark.skipif(known_bug("transformers-prompt-lookup-static-cache-overflow") is not None,
                    reason="transformers before 5.24 refuses a static cache for assisted decoding")
def test_prompt_lookup_overflowing_a_static_cache_is_found_on_the_clean_model():
    # findings/transformers-prompt-lookup-static-cache-overflow.md
    finished, _, _ = fuzz("tests.broken_surfaces:clean", oracles=("assisted",), max_examples=200)
    found = [f.verdict for f in finished.failures]
    assert [v.error_type for v in found] == ["IndexError"], [v.summary() for v in found]
    case = found[0].case
    assert case.cache == "static" and case.setting("drafter") == "prompt-lookup" and case.batch_size == 1


def test_a_reorder_that_skips_a_layer_is_found_by_beam_search_and_by_a_reordered_prefix():
    # Five operations share prefix-reuse's draws and only a two-row reorder shows the bug: a wider budget than the
    # others', so that it is drawn in every process (CI's pytest worker once spent 50 examples without drawing it).
    finished, _, store = fuzz("tests.broken_surfaces:reorder_skips_last_layer", oracles=("beam", "prefix-reuse"),
                              max_examples=3 * BUDGET)
    found = failures(finished)
    assert set(found) == {"beam", "prefix-reuse"}, [v.summary() for v in found.values()]
    assert found["prefix-reuse"].case.setting("operation") == "reorder"
    # The reorder must move something: two rows.
    assert found["prefix-reuse"].case.batch_size == 2
    [record] = [r for r in store.failures() if r.oracle == "prefix-reuse"]
    run = subprocess.run([sys.executable, "-c", record.reproduction], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "reused prefix vs fresh" in run.stdout, run.stdout + run.stderr[-2000:]
    # Beam search: one one-token prompt, two beams; how many steps it takes until the beams first swap rows
    # (so that a stale layer is read) depends on the weights.
    beam = found["beam"].case
    assert beam.prompts == ((0,),) and beam.setting("num_beams") == 2 and beam.max_new_tokens >= 2


def test_a_crop_that_forgets_a_layer_is_found_and_shrunk_to_the_crop():
    # Five operations share the draws: a wider budget than the others', so that crop is drawn whatever the seed.
    finished, _, _ = fuzz("tests.broken_surfaces:crop_forgets_last_layer", oracles=("prefix-reuse",),
                          max_examples=4 * BUDGET)
    [verdict] = failures(finished).values()
    case = verdict.case
    assert case.setting("operation") == "crop"
    assert case.batch_size == 1 and case.prefill_chunks == (1, 1) and case.max_new_tokens == 1


def test_paged_positions_past_the_first_page_are_found_and_shrunk_to_cross_one_page():
    finished, _, store = fuzz("tests.broken_surfaces:paged_positions_past_first_page",
                              oracles=("continuous-batching",), max_examples=BUDGET)
    [verdict] = failures(finished).values()
    assert verdict.kind == "mismatch"
    case = verdict.case
    assert case.batch_size == 1 and case.setting("page_size") == 4
    assert len(case.prompts[0]) + case.max_new_tokens == 6  # the first position past the page is decoded
    [record] = store.failures()
    script = record.reproduction
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "FAILS" in run.stdout


def test_compiled_decoding_is_opt_in_on_a_cpu_and_default_on_cuda():
    compiled = ORACLES["compiled"]
    assert not compiled.is_default("cpu") and compiled.is_default("cuda") and compiled.is_default("cuda:1")
    assert all(oracle.is_default("cuda") == (oracle.default or name == "compiled") for name, oracle in ORACLES.items())


def test_settings_round_trip_and_leave_other_cases_as_stored():
    case = Case(prompts=((1, 2),), settings=(("num_beams", 2), ("num_return_sequences", 1)))
    assert Case.from_json(case.to_json()) == case
    assert "settings" not in Case(prompts=((1,),)).to_json()
    with pytest.raises(ValueError):
        Case(prompts=((1,),), settings=(("x", [1]),))


@pytest.mark.skipif(known_bug("transformers-continuous-batching-drops-attention-softcap") is not None,
                    reason="found on transformers 5.24")
def test_continuous_batching_dropping_gemma2s_attention_softcap_is_found():
    # findings/transformers-continuous-batching-drops-attention-softcap.md: a mismatch in the log-probs, which
    # the near-bound re-check keeps (it is the same size in float64).
    finished, _, _ = fuzz("gemma-2-2b", oracles=("continuous-batching",), max_examples=BUDGET)
    [verdict] = failures(finished).values()
    assert verdict.kind == "mismatch" and verdict.comparison.startswith("log-probs")
    # Minimal: the first log-prob whose query attends to two keys (with one key a softmax is 1, capped or not).
    case = verdict.case
    assert case.batch_size == 1 and len(case.prompts[0]) + case.max_new_tokens == 3


def test_an_attention_kernel_that_drops_the_padding_mask_is_found_and_named():
    finished, _, store = fuzz("tests.broken_surfaces:sdpa_drops_padding_mask", oracles=("attn-impl",), max_examples=BUDGET)
    [verdict] = failures(finished).values()
    assert verdict.kind == "mismatch" and "sdpa" in verdict.comparison
    case = verdict.case
    assert case.batch_size == 2 and sorted(map(len, case.prompts)) == [1, 2] and case.padding_side == "left"
    [record] = store.failures()
    run = subprocess.run([sys.executable, "-c", record.reproduction], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "sdpa vs the run's: max" in run.stdout, run.stdout + run.stderr[-2000:]


def test_the_offloaded_cache_is_not_applicable_off_cuda_and_says_why():
    finished, recorder, _ = fuzz("llama", oracles=("offloaded",), max_examples=5)
    [skipped] = recorder.of("OracleSkipped")
    assert skipped.oracle == "offloaded" and "CUDA only" in skipped.reason
    assert not finished.failures and not recorder.of("OracleFinished")


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="an offloaded cache needs CUDA (optional GPU test)")
def test_the_offloaded_cache_agrees_with_a_dynamic_cache_on_cuda():
    finished, recorder, _ = fuzz("llama", oracles=("offloaded",), max_examples=25, device="cuda")
    assert not finished.failures, [f.verdict.summary() for f in finished.failures]
    assert [e.oracle for e in recorder.of("OracleFinished")] == ["offloaded"]


@pytest.mark.skipif(known_bug("transformers-continuous-batching-fails-bloom-falcon") is not None,
                    reason="found on transformers 5.24")
def test_continuous_batching_failing_every_bloom_request_is_an_error_finding():
    # findings/transformers-continuous-batching-fails-bloom-falcon.md
    finished, _, _ = fuzz("bloom-560m", oracles=("continuous-batching",), max_examples=10)
    [verdict] = failures(finished).values()
    assert verdict.kind == "error" and "get_seq_length" in verdict.error
    assert verdict.case.prompts == ((0,),) and verdict.case.max_new_tokens == 1


quantized = pytest.mark.skipif(
    transformers_major() < 5 or not {"quanto", "hqq", "fp8"} <= set(quantizers()),
    reason="the quantized-cache backends are installed with fuzzkv[quantized] (and FP8 is transformers 5.24's)")
# The real errors the quantized oracle meets on every model in transformers 5.24 with optimum-quanto 0.2.7 and HQQ
# 0.2.8 (findings/transformers-quantized-cache-*.md, findings/optimum-quanto-*.md, findings/hqq-*.md).
QUANTIZED_LIBRARY_ERRORS = {"IndexError", "RuntimeError", "ValueError"}


@quantized
def test_a_quantized_scale_spanning_the_batch_is_found_in_float64_and_shrunk_to_two_rows():
    finished, _, store = fuzz("tests.broken_surfaces:quantized_scale_spans_batch", oracles=("quantized",),
                              max_examples=60)
    [verdict] = [f.verdict for f in finished.failures if f.verdict.kind == "mismatch"]
    assert verdict.comparison == "quantized: batch row vs alone (float64)"
    case = verdict.case
    assert case.batch_size == 2 and case.setting("quantizer") in ("quanto", "hqq") and case.max_new_tokens == 1
    [record] = [r for r in store.failures() if r.kind == "mismatch"]
    run = subprocess.run([sys.executable, "-c", record.reproduction], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "vs alone" in run.stdout and "FAILS" in run.stdout, run.stdout + run.stderr[-2000:]


@quantized
def test_the_quantized_oracle_reports_only_the_libraries_own_errors_on_the_clean_model():
    finished, recorder, _ = fuzz("tests.broken_surfaces:clean", oracles=("quantized",), max_examples=60)
    found = [f.verdict for f in finished.failures]
    assert all(v.kind == "error" and v.error_type in QUANTIZED_LIBRARY_ERRORS for v in found), \
        [v.summary() for v in found]
    assert finished.examples >= 30


@pytest.mark.nightly  # torch.compile on a CPU: about 200 s alone
def test_compiled_decoding_that_differs_from_eager_is_found_and_shrunk_to_one_compiled_step():
    # Compiling costs ~15 s per new shape on a CPU: few examples, and the clean model checked alongside.
    finished, _, store = fuzz("tests.broken_surfaces:compiled_positions_off_by_one", oracles=("compiled",),
                              max_examples=20)
    [verdict] = failures(finished).values()
    assert verdict.kind == "mismatch" and verdict.comparison == "compiled generate vs uncached"
    case = verdict.case
    # The first new token comes from the eager prefill; the second from the first compiled decoding step.
    assert case.batch_size == 1 and case.max_new_tokens == 2 and case.cache == "static"
    [record] = store.failures()
    run = subprocess.run([sys.executable, "-c", record.reproduction], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "FAILS" in run.stdout, run.stdout + run.stderr[-2000:]
    clean, recorder, _ = fuzz("tests.broken_surfaces:clean", oracles=("compiled",), max_examples=10)
    assert not clean.failures and clean.examples >= 8, [f.verdict.summary() for f in clean.failures]


def test_a_combination_the_library_refuses_with_its_documented_error_is_not_a_finding():
    """transformers refuses assisted decoding when the cache cannot be cropped (gemma-2's static sliding-window
    layers): that case is "refused", which the search discards, never an error finding."""
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig
    from fuzzkv.oracles.check import check
    from fuzzkv.verdict import Bounds

    lane = load_lanes(RunConfig(model="gemma-2-2b", scale="tiny", db_url="memory:")).lanes["hf"]
    case = Case(prompts=((1023, 0, 1023, 1009, 501, 1022, 2),), max_new_tokens=6, cache="static",
                settings=(("draft_tokens", 1), ("drafter", "prompt-lookup")))
    verdict = check(ORACLES["assisted"], lane, case, Bounds(1e-4))
    assert verdict.kind == "refused" and not verdict.failed, verdict.summary()
    assert "requires a cache that can be cropped" in verdict.summary()
    finished, _, _ = fuzz("gemma-2-2b", oracles=("assisted",), max_examples=40)
    assert not [f for f in finished.failures if "cropped" in (f.verdict.error or "")]
