"""Vision-language models: a prompt holds an image as a run of the model's image token, fed its pixel values in
the call that holds the run (as generate() feeds a processor's on its first step); every core oracle runs with
images, and a planted image-position bug on cached steps is found, shrunk and reproduced. Real transformers
models, tiny."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings

from fuzzkv.case import Case
from fuzzkv.events import OracleFinished
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from fuzzkv.strategies import CaseSpace, cases, image_spans
from tests.conftest import assert_clean, fuzz
from tests.test_repro_scripts import TOLERANCE, assert_passes, assert_reproduces, lane_of

modern = pytest.mark.skipif(__import__("transformers").__version__.startswith("4."),
                            reason="vision-language models are driven through transformers 5.x")
IMAGE_OFF = "tests.broken_architectures:image_position_off_when_cached"
IMAGE, PER_IMAGE = 511, 16  # the tiny LLaVA's image token and the tokens one image takes (4 x 4 patches)
LATER_IMAGE = Case(prompts=((3,) + (IMAGE,) * PER_IMAGE,), max_new_tokens=2, prefill_chunks=(1, PER_IMAGE))


@settings(max_examples=150, deadline=None)
@given(cases(CaseSpace(vocab_size=50, image_token=49, image_tokens=3), min_batch=2))
def test_images_are_whole_runs_never_split_by_a_chunk_and_never_drawn_as_text(case):
    length = case.padded_length
    spans = [span for row in case.prompts
             for span in image_spans(row, 49, length - len(row) if case.padding_side == "left" else 0)]
    assert all(end - start == 3 for start, end in spans)  # one image per run: never two side by side
    assert all(not any(a < cut < b for a, b in spans) for cut in itertools.accumulate(case.prefill_chunks[:-1]))
    assert all(49 not in row for row in case.continuation)
    assert sum(row.count(49) for row in case.prompts) <= 3 * 2 * case.batch_size


@modern
def test_a_vision_language_model_knows_its_image_token_and_how_many_one_image_takes():
    info = lane_of("llava", "hf", "hf").info
    assert (info.image_token_id, info.image_tokens) == (IMAGE, PER_IMAGE)


@modern
def test_a_vision_language_model_runs_every_core_oracle_with_images_and_its_surfaces_say_why_not():
    core = ("decode", "batch", "chunked", "cache-impl", "cache-reuse", "generate", "beam")
    finished, events, _ = fuzz("llava", max_examples=10, oracles=(*core, "prefix-reuse"))
    assert not finished.failures
    ran = {event.oracle: event.examples for event in events if isinstance(event, OracleFinished)}
    assert all(ran[oracle] >= 10 for oracle in core), ran
    assert "with images yet" in finished.incomplete["prefix-reuse"]


@modern
def test_an_image_token_position_off_on_cached_steps_is_found_with_an_image_after_a_cached_prefix():
    finished, _, _ = fuzz(IMAGE_OFF, oracles=("decode", "chunked"), max_examples=60)
    assert finished.failures
    for found in finished.failures:
        case = found.verdict.case
        assert found.verdict.kind == "mismatch" and case.max_new_tokens == 1
        # the minimal case feeds an image whole in a later chunk, after a cached prefix
        later = [row for row in case.prompts if IMAGE in row[case.prefill_chunks[0] - (case.padded_length - len(row)):]]
        assert later and len(case.prefill_chunks) == 2


@modern
def test_a_planted_image_position_bug_hides_where_the_image_is_in_the_first_chunk():
    lane = lane_of(IMAGE_OFF, "hf", "hf")
    first = Case(prompts=((3,) + (IMAGE,) * PER_IMAGE + (4,),), max_new_tokens=2, prefill_chunks=(1 + PER_IMAGE, 1))
    assert not check(ORACLES["chunked"], lane, first, TOLERANCE).failed
    assert check(ORACLES["chunked"], lane, LATER_IMAGE, TOLERANCE).failed


@modern
@pytest.mark.parametrize("oracle", ["decode", "chunked"])
def test_an_image_script_reproduces_with_transformers_alone(oracle, tmp_path):
    assert_reproduces(lane_of(IMAGE_OFF, "hf", "hf"), oracle, LATER_IMAGE, tmp_path)


@modern
@pytest.mark.parametrize("oracle", ["decode", "batch", "generate"])
def test_a_clean_image_script_passes(oracle, tmp_path):
    case = Case(prompts=((3,) + (IMAGE,) * PER_IMAGE + (4,), (5, 6)), max_new_tokens=2)
    assert_passes(lane_of("llava", "hf", "hf"), oracle, case, tmp_path)


@modern
@pytest.mark.parametrize("model", ["gemma3", "gemma4"])
def test_image_tokens_that_attend_both_ways_do_so_in_every_path_a_later_chunk_included(model):
    """Gemma 3 and 4 let an image's tokens attend to each other both ways, reading the token-type map by position
    from the start of the sequence: every call is given it so (given only for its own tokens, a later chunk's
    image attended one way and parted from the one-pass reference by ~1.5 logits)."""
    lane = lane_of(model, "hf", "hf")
    image = (lane.info.image_token_id,) * lane.info.image_tokens
    case = Case(prompts=((3, 4) + image + (5,),), max_new_tokens=2, prefill_chunks=(2, len(image) + 1))
    assert not check(ORACLES["chunked"], lane, case, TOLERANCE).failed
    assert not check(ORACLES["decode"], lane, case, TOLERANCE).failed


@modern
def test_a_config_whose_layers_differ_in_head_width_runs():
    """transformers 5.25's per-layer configs (Gemma 4) refuse a global head_dim: fuzzkv reads each layer's."""
    assert lane_of("gemma4_text", "hf", "hf").info.head_dim == 16


MROPE_DROPPED = "tests.broken_architectures:mrope_shift_dropped_after_first_step"


@settings(max_examples=100, deadline=None)
@given(cases(CaseSpace(vocab_size=50, image_token=49, image_tokens=3, image_open=47, image_close=48)))
def test_where_a_model_wraps_its_images_every_run_is_wrapped_and_the_wrapping_tokens_are_never_text(case):
    cuts = list(itertools.accumulate(case.prefill_chunks[:-1]))
    for row in case.prompts:
        runs = image_spans(row, 49)
        assert all(row[start - 1] == 47 and row[end] == 48 for start, end in runs)
        assert row.count(47) == row.count(48) == len(runs)
        offset = case.padded_length - len(row) if case.padding_side == "left" else 0
        # a chunk never cuts inside an image with its wrapping tokens (the model may count them with its pixels)
        assert not any(offset + start - 1 < cut < offset + end + 1 for start, end in runs for cut in cuts)
    assert all(token not in (47, 48, 49) for row in case.continuation for token in row)


@modern
def test_an_mrope_model_knows_the_tokens_its_images_are_wrapped_in_and_runs_every_core_oracle_with_images():
    info = lane_of("qwen2_vl", "hf", "hf").info
    assert info.image_tokens == 4 and info.image_open_id is not None and info.image_close_id is not None
    assert_clean("qwen2_vl", ("decode", "batch", "chunked", "cache-impl", "cache-reuse", "generate", "beam"), 10)


@modern
def test_an_mrope_shift_dropped_after_the_first_decode_step_is_found_and_shrunk_to_one_image_and_three_tokens():
    finished, _, _ = fuzz(MROPE_DROPPED, oracles=("decode",), max_examples=60)
    assert finished.failures
    found = finished.failures[0]
    case = found.verdict.case
    info = lane_of(MROPE_DROPPED, "hf", "hf").info
    assert found.verdict.kind == "mismatch" and case.batch_size == 1
    # a single decode step cannot show it: the step after it is the first with the shift lost
    assert case.max_new_tokens == 3
    layout = info.image_layout
    row = case.prompts[0]
    assert any(row[i:i + len(layout)] == layout for i in range(len(row)))


@modern
def test_a_dropped_mrope_shift_hides_without_an_image_and_its_script_reproduces(tmp_path):
    lane = lane_of(MROPE_DROPPED, "hf", "hf")
    info = lane.info
    text = Case(prompts=((3, 4, 5),), max_new_tokens=3)
    image = Case(prompts=((3, *info.image_layout),), max_new_tokens=3)
    assert not check(ORACLES["decode"], lane, text, TOLERANCE).failed
    assert check(ORACLES["decode"], lane, image, TOLERANCE).failed
    assert_reproduces(lane, "decode", image, tmp_path)


@modern
@pytest.mark.parametrize("model", ["llava_next", "idefics3"])
def test_tiled_and_grouped_image_layouts_run_the_cached_oracles_clean(model):
    # LLaVA-NeXT takes each image as its base image and tiles; Idefics 3 takes images grouped per row (padded with
    # all-zero images), which beam search expands row by row
    assert_clean(model, ("decode", "batch", "chunked", "beam"), 8)


@modern
@pytest.mark.parametrize(("model", "per_image"), [("minicpm_ocr", 4), ("minicpmv4_7", 1), ("nemotron_h_omni", 4)])
def test_packed_and_row_column_image_layouts_take_their_image_tokens_and_run_the_cached_oracles_clean(model, per_image):
    # MiniCPM-o OCR and MiniCPM-V 4.7 take every image's patches side by side in one row, with each image's (rows,
    # columns) (target_sizes; 4.7 also places an image's tokens by a canvas M-RoPE anchored on its <image> markers);
    # Nemotron-H Omni its flattened patches with each image's (rows, columns) (image_grid_hw). None of their config
    # classes names an image token: the tiny twin has one, and 4 x 4 patches merge into per_image tokens
    info = lane_of(model, "hf", "hf").info
    assert info.image_token_id is not None and info.image_tokens == per_image
    assert_clean(model, ("decode", "batch", "chunked"), 5)
