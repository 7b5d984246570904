"""Encoder-decoder models: cases carry each row's encoder inputs, the decoder is driven through its
EncoderDecoderCache (self-attention and cross-attention) against one uncached forward, and a planted
cross-attention bug is found, shrunk and reproduced by a standalone script. Real transformers models, tiny."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.case import Case
from fuzzkv.events import OracleFinished
from fuzzkv.models import shrink, twins
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from fuzzkv.strategies import CaseSpace, cases
from tests.conftest import fuzz
from tests.test_repro_scripts import TOLERANCE, assert_passes, assert_reproduces, lane_of

modern = pytest.mark.skipif(__import__("transformers").__version__.startswith("4."),
                            reason="encoder-decoder models are driven through transformers 5.x caches")
WRONG_ROW = "tests.broken_architectures:cross_attention_from_wrong_row"
TWO_ENCODERS = Case(prompts=((2, 5), (2, 6)), max_new_tokens=3, encoder=((7, 8, 9), (10,)))


def test_an_encoder_decoder_case_keeps_its_encoder_rows_through_json_and_row_slices():
    case = Case(prompts=((2, 5), (2, 6)), encoder=((7, 8, 9), (10,)), max_new_tokens=2)
    assert Case.from_json(case.to_json()) == case
    assert case.rows(1, 2).encoder == ((10,),) and case.rows(1, 2).prompts == ((2, 6),)
    assert "encoder lengths 3,1" in case.describe()
    assert "encoder" not in Case(prompts=((1,),)).to_dict()  # a decoder-only case keeps its stored form


@pytest.mark.parametrize("bad", [
    {"prompts": ((2, 5), (2,)), "encoder": ((7,), (8,))},  # decoder prompts of two lengths
    {"prompts": ((2, 5),), "encoder": ((7,), (8,))},  # more encoder rows than prompts
    {"prompts": ((2, 5),), "encoder": ((),)},  # an empty encoder row
])
def test_a_malformed_encoder_decoder_case_is_refused(bad):
    with pytest.raises(ValueError):
        Case(**bad)


@settings(max_examples=60, deadline=None)
@given(cases(CaseSpace(vocab_size=50, encoder_decoder=True, decoder_start=2, padding_sides=("left",)), min_batch=2))
def test_drawn_decoder_prompts_are_of_one_length_and_start_where_decoding_starts(case):
    assert case.batch_size >= 2 and len(case.encoder) == case.batch_size and not case.padded
    assert all(prompt[0] == 2 for prompt in case.prompts)


@modern
def test_a_seq2seq_model_runs_every_core_oracle_with_examples_and_its_surfaces_say_why_not():
    core = ("decode", "batch", "chunked", "cache-impl", "cache-reuse", "generate", "beam")
    finished, events, _ = fuzz("bart", max_examples=8, oracles=(*core, "prefix-reuse"))
    assert not finished.failures and finished.examples >= 8 * len(core)
    ran = {event.oracle: event.examples for event in events if isinstance(event, OracleFinished)}
    assert all(ran[oracle] >= 8 for oracle in core), ran
    # asked for by name and not driven through a decoder yet: said, so the run is not "clean"
    assert "encoder-decoder" in finished.incomplete["prefix-reuse"]


@modern
def test_a_cross_attention_cache_from_another_row_is_found_and_shrunk_to_two_rows():
    finished, _, _ = fuzz(WRONG_ROW, oracles=("decode",), max_examples=40)
    [found] = finished.failures
    case = found.verdict.case
    assert found.verdict.kind == "mismatch"
    # Invisible in one row, or in rows of equal encoder inputs: two rows of one-token encoder inputs that differ.
    assert case.batch_size == 2 and [len(row) for row in case.encoder] == [1, 1]
    assert case.encoder[0] != case.encoder[1] and case.total_length == 3


@modern
@pytest.mark.parametrize("oracle", ["decode", "batch"])
def test_an_encoder_decoder_script_reproduces_with_transformers_alone(oracle, tmp_path):
    assert_reproduces(lane_of(WRONG_ROW, "hf", "hf"), oracle, TWO_ENCODERS, tmp_path)


@modern
@pytest.mark.parametrize("oracle", ["decode", "batch", "generate", "beam"])
def test_a_clean_encoder_decoder_script_passes(oracle, tmp_path):
    case = TWO_ENCODERS if oracle != "beam" else Case(prompts=((2, 5),), max_new_tokens=2, encoder=((7, 8),),
                                                      settings={"num_beams": 2, "num_return_sequences": 2})
    assert_passes(lane_of("bart", "hf", "hf"), oracle, case, tmp_path)


@modern
def test_a_planted_cross_attention_bug_needs_rows_of_different_encoder_inputs():
    lane = lane_of(WRONG_ROW, "hf", "hf")
    same = Case(prompts=((2, 5), (2, 5)), max_new_tokens=3, encoder=((7, 8), (7, 8)))
    assert not check(ORACLES["decode"], lane, same, TOLERANCE).failed
    assert check(ORACLES["decode"], lane, TWO_ENCODERS, TOLERANCE).failed


@modern
def test_whisper_hears_audio_drawn_from_each_rows_encoder_ids_and_says_why_beam_search_is_not_applicable():
    finished, events, _ = fuzz("whisper", max_examples=5, oracles=("decode", "batch", "cache-impl", "beam"))
    assert not finished.failures
    ran = {event.oracle: event.examples for event in events if isinstance(event, OracleFinished)}
    assert all(ran[oracle] >= 5 for oracle in ("decode", "batch", "cache-impl")), ran
    assert "WhisperGenerationMixin" in finished.incomplete["beam"]
    # a row's audio follows its encoder ids, wherever the row stands in a batch
    model = shrink.build(shrink.tiny_config("whisper"))
    ids, mask = torch.tensor([[3, 4], [5, 0], [3, 4]]), torch.tensor([[1, 1], [1, 0], [1, 1]])
    audio = hf_paths.encoder_keywords(model, ids, mask)["input_features"]
    alone = hf_paths.encoder_keywords(model, ids[1:2, :1], mask[1:2, :1])["input_features"]
    assert torch.equal(audio[0], audio[2]) and not torch.equal(audio[0], audio[1]) and torch.equal(audio[1], alone[0])


@modern
@pytest.mark.parametrize("model_type", ["canary", "cohere_asr"])
def test_a_parakeet_encoder_hears_frames_of_its_mel_bins_padded_with_a_mask_as_its_feature_extractor_pads(model_type):
    # ParakeetFeatureExtractor / CohereAsrFeatureExtractor: input_features [B, frames, feature_size], attention_mask
    model = shrink.build(shrink.tiny_config(model_type))
    ids, mask = torch.tensor([[3, 4], [5, 0]]), torch.tensor([[1, 1], [1, 0]])
    fed = hf_paths.encoder_keywords(model, ids, mask)
    frames = 2 * hf_paths.AUDIO_FRAMES_PER_TOKEN
    assert fed["input_features"].shape == (2, frames, model.config.encoder_config.num_mel_bins)
    assert fed["attention_mask"].sum(1).tolist() == [frames, frames // 2]


@modern
def test_a_beam_without_an_index_is_paired_with_its_own_rows_scores_never_another_rows():
    # transformers 5.25 gives an encoder-decoder model's second returned sequence after one new token the beam
    # index -1; read as beam 0, the second row's sequence was compared with the first row's scores (a false alarm)
    lane = lane_of("bart", "hf", "hf")
    start = lane.info.decoder_start_id
    case = Case(prompts=((start, 5, 6), (start, 7, 8)), encoder=((3, 4), (5, 6, 7, 8, 9)), max_new_tokens=1,
                settings={"num_beams": 2, "num_return_sequences": 2})
    assert not check(ORACLES["beam"], lane, case, TOLERANCE).failed


IMAGE_KEYS = {"florence2": {"input_ids", "attention_mask", "pixel_values"}, "pix2struct": {"flattened_patches",
              "attention_mask"}, "pp_formulanet": {"pixel_values"}, "vision-encoder-decoder": {"pixel_values"}}


@modern
@pytest.mark.parametrize("model_type", sorted(IMAGE_KEYS))
def test_an_image_encoder_sees_an_image_drawn_from_each_rows_encoder_ids_as_its_processor_lays_it_out(model_type):
    model = shrink.build(twins.tiny_config(model_type))
    assert type(model).__name__ == shrink.model_class(model_type)  # its image-text-to-text class, not a speech one
    ids, mask = torch.tensor([[3, 4], [5, 0], [3, 4]]), torch.tensor([[1, 1], [1, 0], [1, 1]])
    fed = hf_paths.encoder_keywords(model, ids, mask)
    assert set(fed) == IMAGE_KEYS[model_type]
    image = fed.get("pixel_values", fed.get("flattened_patches"))
    alone = hf_paths.encoder_keywords(model, ids[1:2, :1], mask[1:2, :1])
    assert torch.equal(image[0], image[2]) and not torch.equal(image[0], image[1])
    assert torch.equal(image[1], alone.get("pixel_values", alone.get("flattened_patches"))[0])
    if model_type == "florence2":  # processing_florence2.py: the image's tokens, then the text, padded on the right
        count = fed["input_ids"].shape[1] - ids.shape[1]
        assert count > 1 and (fed["input_ids"][:, :count] == model.config.image_token_id).all()
        assert torch.equal(fed["input_ids"][:, count:], ids) and fed["attention_mask"].sum(1).tolist() == [
            count + 2, count + 1, count + 2]
    # the cached decode step over the image's encoding matches one uncached pass, and (weights drawn as fuzzkv
    # draws them) another image changes the decoder's logits
    step, full = shrink.decode_step_logits(model)
    assert (step - full).abs().max() < 1e-4
    model = hf_paths.random_model(twins.tiny_config(model_type), 0, 0.02, "eager").eval()
    other = hf_paths.encoder_keywords(model, ids + 7, mask)
    decoder = torch.tensor([[model.generation_config.decoder_start_token_id or 0]] * 3)
    with torch.no_grad():
        seen, changed = (model(**{**fed, **{key: value for key, value in images.items() if key != "input_ids"}},
                               decoder_input_ids=decoder).logits for images in (fed, other))
    assert not torch.equal(seen, changed)


@modern
def test_an_image_text_encoder_decoder_whose_image_the_path_code_cannot_place_is_never_proven_on_text_alone(
        monkeypatch):
    model = shrink.build(twins.tiny_config("pix2struct"))
    monkeypatch.setattr(hf_paths, "encoder_tower", lambda model: None)  # as T5Gemma 2's encoder config would read
    with pytest.raises(shrink.CannotBuild, match="not fuzzed yet"):
        shrink.decode_step_logits(model)
