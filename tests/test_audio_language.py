"""Audio LMs (Voxtral, GLM-ASR, Audio Flamingo 3, Qwen3-ASR): a prompt holds an audio clip as a run of the model's
audio token, fed its mel features in the call that holds the run, exactly as an image is fed to a vision-language
model (fuzzkv's cases call both "images"). Real transformers models, tiny."""

from __future__ import annotations

import pytest
import torch

from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.case import Case
from fuzzkv.models import shrink, twins
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from tests.conftest import assert_clean
from tests.test_repro_scripts import TOLERANCE, lane_of

modern = pytest.mark.skipif(__import__("transformers").__version__.startswith("4."),
                            reason="audio LMs are driven through transformers 5.x")
AUDIO, PER_CLIP = 24, 8  # Voxtral's audio token (its processor's) and the tokens one clip of 32 mel frames takes
CORE = ("decode", "batch", "chunked", "cache-impl", "cache-reuse", "generate")


@modern
def test_an_audio_lm_knows_its_audio_token_and_how_many_tokens_one_clip_takes():
    info = lane_of("voxtral", "hf", "hf").info
    assert (info.image_token_id, info.image_tokens) == (AUDIO, PER_CLIP)


@modern
@pytest.mark.parametrize(("model_type", "mask"), [("voxtral", None), ("glmasr", "input_features_mask")])
def test_a_clip_is_fed_as_its_processor_feeds_it_mel_bins_by_frames_with_its_frame_mask_where_taken(model_type, mask):
    model = shrink.build(twins.tiny_config(model_type))
    clip = hf_paths.image_pixels(model, [3, 4])
    assert clip.shape == (hf_paths.tower_config(model).num_mel_bins, clip.shape[-1])
    assert torch.equal(clip, hf_paths.image_pixels(model, [3, 4])) and not torch.equal(clip, hf_paths.image_pixels(model, [3]))
    fed = hf_paths.image_batch(model, [[clip], [clip, clip]], "cpu")
    assert fed["input_features"].shape == (3, *clip.shape)  # clips in order, rows concatenated, as the processor
    assert sorted(fed) == sorted(["input_features", *([mask] if mask else [])])


@modern
def test_an_audio_lm_runs_the_core_oracles_clean_with_audio():
    assert_clean("voxtral", CORE, 8)


@modern
def test_beam_search_over_two_audio_chunks_in_one_prompt_is_found_and_one_chunk_passes():
    # findings/transformers-audio-lm-beam-search-pairs-wrong-audio.md: generate() expands input_features clip by
    # clip ([A, A, B, B]) where each beam needs the prompt's whole group ([A, B, A, B])
    lane = lane_of("voxtral", "hf", "hf")
    clip = (AUDIO,) * PER_CLIP
    one, two = ((3, *clip, 4),), ((3, *clip, 4, *clip, 5),)
    beams = {"num_beams": 2, "num_return_sequences": 1}
    assert not check(ORACLES["beam"], lane, Case(prompts=one, max_new_tokens=1, settings=beams), TOLERANCE).failed
    assert check(ORACLES["beam"], lane, Case(prompts=two, max_new_tokens=1, settings=beams), TOLERANCE).failed


@modern
@pytest.mark.parametrize(("model_type", "fed", "per_clip"), [
    # Qwen2-Audio encodes inline in its forward: its processor's count (processing_qwen2_audio.py), 32 frames -> 8
    ("qwen2_audio", ["input_features", "feature_attention_mask"], 8),
    # MusicFlamingo times its features by each clip's run in input_ids: counted as its processor counts
    ("musicflamingo", ["input_features", "input_features_mask"], 8),
    # MOSS: the raw-sample mask its feature extractor reports, 160 samples a frame; 16 frames merged 4 a token
    ("moss_transcribe_diarize", ["input_features", "input_features_mask", "padding_mask"], 4),
    # Fun-ASR-Nano: low-frame-rate stacks, frames first ([frames, 80 x 7]), a token each
    ("fun_asr_nano", ["input_features", "input_features_mask"], 6),
])
def test_each_audio_lm_is_fed_its_processors_layout_and_counts_its_processors_tokens(model_type, fed, per_clip):
    model = shrink.build(twins.tiny_config(model_type))
    clip = hf_paths.image_pixels(model, [3])
    batch = hf_paths.image_batch(model, [[clip], [clip, clip]], "cpu")
    assert sorted(batch) == sorted(fed) and batch["input_features"].shape == (3, *clip.shape)
    frames = hf_paths.clip_frames(hf_paths.tower_config(model))
    assert all(mask.shape[0] == 3 and bool(mask.all()) for name, mask in batch.items() if name != "input_features")
    if "padding_mask" in batch:  # a clip's raw samples, not its frames
        assert batch["padding_mask"].shape[-1] == frames * hf_paths.HOP_LENGTH
    if model_type == "fun_asr_nano":
        assert clip.shape == (frames, 80 * 7)
    assert hf_paths.tokens_per_image(model) == per_clip


@modern
@pytest.mark.parametrize("model_type", ["qwen2_audio", "fun_asr_nano"])
def test_more_audio_lms_run_the_decode_and_batch_oracles_clean_with_audio(model_type):
    assert_clean(model_type, ("decode", "batch"), 4)
