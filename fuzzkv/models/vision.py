"""A tiny twin of a vision-language model type: its text decoder shrunk as ``shrink`` shrinks any causal LM, its
vision tower(s) to two layers of width 64 and images of 4 x 4 patches, every special token (the image token
included) inside the tiny vocabulary.

The rules are data, as in :mod:`fuzzkv.models.shrink`: ``VISION_TINY`` maps the sizes towers name to tiny values;
``FAMILY_FIXES`` holds what one family's config cannot tell. Whether a twin is fuzzed is proven by the shrinker
itself: the model builds, takes an image the way the path code feeds one, and runs a cached decode step that
matches one uncached pass.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from transformers import AutoConfig
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from fuzzkv.models import shrink

HIDDEN, FFN, HEADS = shrink.HIDDEN, shrink.FFN, shrink.HEADS
VISION_LAYERS = 2  # 2, so a feature layer of -2 (the usual default) is a real layer's output
GRID = 4  # patches per image side: divisible by the spatial merges and pixel shuffles towers apply (2)

TOWER_LAYERS = ("num_hidden_layers", "depth", "num_layers", "n_layers", "encoder_layers", "decoder_layers")
# A tower's sizes: widths all HIDDEN (a tower's output width often has to equal the text width), feed-forwards
# FFN, heads HEADS.
VISION_TINY = {
    **dict.fromkeys(TOWER_LAYERS, VISION_LAYERS),
    **dict.fromkeys(("hidden_size", "embed_dim", "out_hidden_size", "width", "projection_dim", "vision_output_dim",
                     "text_hidden_size", "encoder_hidden_size", "output_channels", "out_channels",
                     "projector_input_dim", "projector_output_dim", "projection_hidden_dim", "patch_embed_hidden_size",
                     "post_conv_in_channels", "post_conv_mid_channels", "post_conv_out_channels",
                     "image_token_embed_dim", "decoder_hidden_size", "pooler_output_size", "adapter_in_dim",
                     "adapter_out_dim", "d_model", "vision_hidden_size", "codebook_dim", "audio_hidden_size",
                     "output_dim"), HIDDEN),
    **dict.fromkeys(("intermediate_size", "mlp_dim", "d_ff", "projection_intermediate_size",
                     "moe_intermediate_size", "encoder_ffn_dim"), FFN),
    **dict.fromkeys(("num_attention_heads", "num_heads", "attention_heads", "encoder_attention_heads"), HEADS),
    "num_key_value_heads": 2,
    **dict.fromkeys(("head_dim", "d_kv", "resampler_head_dim"), HIDDEN // HEADS),
    "num_global_layers": 1, "resampler_depth": 1, "resampler_n_heads": HEADS, "resampler_n_latents": 8,
    # a Whisper-style audio tower's window: 32 mel frames a clip (16 positions), a few audio tokens, where the
    # released window makes hundreds. (Qwen3-ASR's chunk of 2 x n_window frames stays: its length formula
    # hard-codes the released chunk's 13 tokens.)
    "max_source_positions": 16,
    "num_local_experts": 2, "num_experts_per_tok": 1,
    # Fun-ASR-Nano's tower: its last layers predict timestamps, the one before them ends the transcription, each
    # normalised (modeling_fun_asr_nano.py FunAsrNanoEncoder): one of two tiny layers
    "num_timestamp_prediction_layers": 1,
}
# Per-layer index lists of a tower: kept inside the tiny stack.
TOWER_INDEX_LISTS = ("deepstack_visual_indexes", "global_attn_indexes", "fullatt_block_indexes",
                     "intermediate_layers_indices", "summary_idxs")
IMAGE_SIZES = ("image_size", "max_image_size", "resolution", "max_img_size", "force_image_size")
POSITION_TABLES = ("num_position_embeddings", "max_num_patches")
# Top-level settings naming a tower's layer: clipped into the tiny tower.
FEATURE_LAYERS = ("vision_feature_layer", "vision_feature_layers", "spatial_vision_layer")
# Settings naming a tower layer itself (a dotted name: a sub-config's): MiniCPM-V 4.6's window-attention merger
# runs after the layer it names (modeling_minicpmv4_6.py: layer_index == insert_layer_id; named past the stack it
# never runs, though the merger after the tower still halves the grid); Molmo 2's adapter pools the outputs of the
# layers it names (configuration_molmo2.py validates that each indexes a layer).
TOWER_LAYER_INDEXES = ("insert_layer_id", "adapter_config.vision_feature_layer")
TEXT_KEYS = ("text_config", "decoder", "vlm_config")
PROJECTOR_OUTPUTS = ("projection_dim",)  # top-level widths a projector maps image features to
TOWER_KEYS = ("vision_config", "high_res_vision_config", "vq_config", "qformer_config", "perceiver_config",
              "adapter_config")

# An id standing for a token whose released id only the family's tokenizer holds (not in the library): outside the
# tiny vocabulary, so _remap_special_tokens gives it a free id inside it.
TOKENIZERS_ID = 1 << 20

# What one family's config cannot tell, each with why.
FAMILY_FIXES: dict[str, dict] = {
    # Gemma 3 pools an image to mm_tokens_per_image tokens, a square that must divide the tiny GRID x GRID patches
    "gemma3": {"mm_tokens_per_image": 4},
    "shieldgemma2": {"mm_tokens_per_image": 4},
    # Aria's projector looks its query count up by the tower's patch count (GRID x GRID)
    "aria": {"projector_patch_to_query_dict": {GRID * GRID: 4}},
    # Qwen2.5-Omni's and Qwen3-Omni's thinker finds an image by the token after each vision start
    # (get_rope_index), an id the thinker's config class does not declare: the ids the same family's talker config
    # class declares (configuration_qwen2_5_omni.py, configuration_qwen3_omni_moe.py: one tokenizer)
    **dict.fromkeys(("qwen2_5_omni_thinker", "qwen3_omni_moe_thinker"),
                    {"vision_start_token_id": 151652, "vision_end_token_id": 151653}),
    # MiniCPM-V 4.6's and MiniCPM-o OCR's image token: their processor's (the tokenizer's image_token_id,
    # processing_minicpmv4_6.py), which the released config.json holds; the config class defaults it to None, and
    # the forward then takes no image
    **dict.fromkeys(("minicpmv4_6", "minicpm_ocr"), {"image_token_id": TOKENIZERS_ID}),
    # MiniCPM-V 4.7's canvas M-RoPE also anchors each image on the markers its processor wraps it in (<image>,
    # </image>; <slice>, </slice> and the newline between slice rows), ids its config class leaves None
    # ("resolved from the tokenizer ... required for image or video inputs", configuration_minicpmv4_7.py)
    "minicpmv4_7": {name: TOKENIZERS_ID + i for i, name in enumerate(
        ("image_token_id", "image_start_id", "image_end_id", "slice_start_id", "slice_end_id", "newline_id"))},
    # Nemotron-H Omni: its image token is its processor's (the tokenizer's <image>, processing_nemotron_h_omni.py),
    # which the released config.json holds (img_context_token_id) and the config class defaults to None; its
    # projector takes the tower's width (vision_hidden_size)
    "nemotron_h_omni": {"image_token_id": TOKENIZERS_ID, "vision_hidden_size": HIDDEN, "projector_hidden_size": HIDDEN},
    # Voxtral's audio token: its processor's (processing_voxtral.py sets audio_token_id = 24), its config's default None
    "voxtral": {"audio_token_id": 24},
    # Kimi K2.5's projector normalises each patch before its 2 x 2 merge: projection_hidden_size is the tower's width
    "kimi_k25": {"projection_hidden_size": HIDDEN},
    # Muse's tower ends in a 2 x 2 pixel shuffle: its output (out_hidden_size) is 4 tower widths
    **dict.fromkeys(("muse_glimmer", "muse_spark"), {"out_hidden_size": 4 * HIDDEN, "projector_hidden_size": HIDDEN}),
    # Fun-ASR-Nano's adaptor's feed-forward is a quarter of the text width (configuration_fun_asr_nano.py
    # validate_architecture); a fix of a sub-config is merged into it
    "fun_asr_nano": {"adaptor_config": {"intermediate_size": HIDDEN // 4, "projector_hidden_size": FFN}},
    # Florence-2's DaViT tower: four stages (strides 4, 2, 2, 2: one cell per 32 x 32 pixels) whose per-stage lists
    # no count names; one block each, widths up to HIDDEN (heads and channel groups dividing them), and the image
    # of GRID x GRID final cells its config cannot tell (it declares no image size; its processor's is 768)
    "florence2": {"vision_config": {"depths": [1, 1, 1, 1], "embed_dim": [8, 16, 32, HIDDEN], "num_heads": [1, 1, 2, 4],
                                    "num_groups": [1, 1, 2, 4], "image_size": 32 * GRID}},
    # PP-FormulaNet's projector halves each side twice (two stride-2 convolutions): GRID x GRID patches would make
    # one encoder position; twice the side (patches of 16 pixels) makes 2 x 2, so its decoder's cross-attention
    # has positions to weigh
    "pp_formulanet": {"vision_config": {"image_size": 2 * GRID * 16}},
}


@functools.cache
def _proven_tiny_config(model_type: str) -> str:
    if not takes_media(model_type):
        raise shrink.CannotBuild(f"multimodal: {shrink.NOT_IMAGE_TEXT}")
    try:
        tiny = tiny_config(model_type)
    except Exception as exc:  # noqa: BLE001 - a default config the family itself rejects
        raise shrink.CannotBuild(f"its default config does not validate: {shrink._first_line(exc)}") from None
    return json.dumps(shrink._proven(model_type, tiny))


def proven_tiny_config(model_type: str) -> dict:
    """The tiny twin of a vision-language model type, once its image-text-to-text class has built it and run a
    cached decode step with an image (``shrink._proven``); raises ``shrink.CannotBuild`` with why not."""
    return json.loads(_proven_tiny_config(model_type))


def takes_media(model_type: str) -> bool:
    """Whether ``model_type`` is a model fuzzkv feeds images or audio clips: an image-text-to-text class over a
    vision tower or an encoder, or a config with an audio tower (an audio LM: Voxtral, Qwen3-ASR; ``shrink.has_audio_tower``)."""
    defaults = shrink._class_defaults(model_type)
    return (image_text_class(model_type) is not None and any(key in defaults for key in IMAGE_ENCODERS)) or \
        shrink.has_audio_tower(defaults)


# Where an image-text-to-text config declares the tower its images go through: a vision tower, or an
# encoder-decoder's encoder (VisionEncoderDecoderModel's; the path code checks that it takes an image).
IMAGE_ENCODERS = ("vision_config", "encoder")


def image_text_class(model_type: str) -> str | None:
    """The image-text-to-text class transformers builds for ``model_type``; None where that mapping lists none."""
    return vars(modeling_auto).get(shrink.IMAGE_TEXT_TABLE, {}).get(model_type)


def tiny_config(model_type: str) -> dict:
    """The tiny twin of ``model_type``'s default composite config, as a config.json dict (not yet proven)."""
    config = shrink._plain(AutoConfig.for_model(model_type).to_dict(), model_type)
    text = _seq2seq_text if config.get("is_encoder_decoder") is True else _text
    for key, value in list(config.items()):
        if shrink.is_sub_config(value):
            config[key] = text(value) if key in TEXT_KEYS else _tower(value)
    config.update(shrink._shrink_scalars({k: v for k, v in config.items() if not shrink.is_sub_config(v)}))
    # the projector's output is a text embedding: PaliGemma's projection_dim is its text width (2048 released)
    config.update({name: HIDDEN for name in PROJECTOR_OUTPUTS if shrink._is_count(config.get(name))})
    tower: dict[str, Any] = next((config[k] for k in TOWER_KEYS if isinstance(config.get(k), dict)), {})
    if shrink._is_count(config.get("image_size")) and "image_size" in tower:
        config["image_size"] = tower["image_size"]
    _clip_feature_layers(config, next((tower[n] for n in TOWER_LAYERS if shrink._is_count(tower.get(n))),
                                      VISION_LAYERS))
    if isinstance(config.get("image_grid_pinpoints"), list):  # LLaVA-NeXT: one tile grid, the base image's size
        side = tower.get("image_size") or config.get("image_size")
        side = side[0] if isinstance(side, list) else side
        config["image_grid_pinpoints"] = [[side, side]]
    for key, fix in FAMILY_FIXES.get(model_type, {}).items():  # a fix to a sub-config sets its keys only
        config[key] = {**config[key], **fix} if shrink.is_sub_config(config.get(key)) else fix
    _remap_special_tokens(config)  # a fix's token ids too
    return config


def _text(text: dict) -> dict:
    """A text sub-config: fuzzkv's proven tiny twin of its type, where its type is a causal LM that builds; else
    shrunk as the shrinker shrinks a causal LM's (its constraints applied, one layer of each kind kept: a hybrid
    stack keeps its attention layers); its M-RoPE sections fitted to the tiny heads."""
    model_type = str(text.get("model_type"))  # every text sub-config names its type
    text = {**text, **shrink.RELEASED_LAYOUTS.get(model_type, {})}
    if model_type in shrink.causal_lm_types():
        try:
            return _fit_mrope({**text, **shrink.tiny_config(model_type)})
        except shrink.CannotBuild:
            pass
    if model_type in CONFIG_MAPPING:  # fitted first: the layer search builds the config, which checks the sections
        try:
            return shrink._shrink_layers(model_type, text, _fit_mrope(shrink._shrunk(model_type, text)), 1)
        except shrink.CannotBuild:  # no short stack keeps its kinds: its first two layers, as a stack of one kind
            pass
    shrunk = shrink._constrain(shrink._shrink_scalars(text), text)  # MLA's keys per query head, as any text model's
    layers = next((text[n] for n in shrink.LAYER_COUNTS if shrink._is_count(text.get(n))), None)
    return _fit_mrope(shrink._select_layers(shrunk, text, list(range(min(2, layers))), layers) if layers else shrunk)


def _seq2seq_text(text: dict) -> dict:
    """An image encoder-decoder's text sub-config (its decoder, and its text encoder where it has one): shrunk as
    the shrinker shrinks an encoder-decoder's, one layer in each stack."""
    return shrink._one_layer_stacks(shrink._shrunk(str(text.get("model_type")), text))


ROPE_HOLDERS = ("rope_parameters", "rope_scaling")
RELEASED_MROPE_SECTIONS = (16, 24, 24)
# A family whose model falls back to sections of another proportion: ERNIE 4.5-VL's (row, column, frame), its row
# and column sections stacked pairwise, so equal (modeling_ernie4_5_vl_moe.py recomposition_frequencies).
RELEASED_MROPE_SECTIONS_OF = {"ernie4_5_vl_moe_text": (22, 22, 20)}
# Text types whose model falls back to the released sections where the config names none, though the config class
# does not declare the key (PaddleOCR-VL: modeling_paddleocr_vl.py reads rope_parameters.get("mrope_section")).
UNDECLARED_MROPE = ("paddleocr_vl_text",)


def _fit_mrope(text: dict) -> dict:
    """M-RoPE splits each head's rotary half into (frame, row, column) sections: scaled, in proportion, to sum to
    the tiny head's rotary half (the released sections sum to the released head's)."""
    text = {**text, **{k: dict(text[k]) for k in ROPE_HOLDERS if isinstance(text.get(k), dict)}}  # not the caller's
    heads = text.get("num_attention_heads") or HEADS
    # multi-head latent attention rotates only qk_rope_head_dim dimensions of each head
    head = text.get("qk_rope_head_dim") or text.get("head_dim") or text.get("hidden_size", HIDDEN) // heads
    rope = next((text[k] for k in ROPE_HOLDERS if isinstance(text.get(k), dict)), None)
    if rope is None:
        rope = text["rope_parameters"] = {}
    rotary = int(head * (text.get("partial_rotary_factor") or rope.get("partial_rotary_factor") or 1)) // 2
    # A config class that declares the key and leaves it unset: its model falls back to the released sections
    # (Qwen2-VL's [16, 24, 24], GLM-4V's [8, 12, 12]: one proportion), sized for the released head.
    config_class = CONFIG_MAPPING[text["model_type"]] if text.get("model_type") in CONFIG_MAPPING else None
    declared = getattr(config_class, "ignore_keys_at_rope_validation", None) or ()
    falls_back = "mrope_section" in declared or text.get("model_type") in UNDECLARED_MROPE
    if falls_back and not any(isinstance(v, dict) for v in rope.values()):
        rope.setdefault("mrope_section", list(RELEASED_MROPE_SECTIONS_OF.get(text["model_type"],
                                                                         RELEASED_MROPE_SECTIONS)))
    sections = rope.get("mrope_section")
    if isinstance(sections, list) and sections and sum(sections) != rotary:
        # rounded, not floored: equal sections stay equal where the remainder would fall on the first alone
        fitted = [max(1, round(part * rotary / sum(sections))) for part in sections]
        fitted[0] += rotary - sum(fitted)
        rope["mrope_section"] = fitted
    return text


def _tower(tower: dict) -> dict:
    """A vision tower (or a projector's, a Q-Former's) sub-config: two layers, tiny widths, GRID x GRID patches."""
    shrunk: dict[str, Any] = {name: _tower(value) if shrink.is_sub_config(value)
              else VISION_TINY[name] if name in VISION_TINY and shrink._is_count(value)
              else value for name, value in tower.items()}
    layers: Any = next((shrunk[n] for n in TOWER_LAYERS if shrink._is_count(shrunk.get(n))), None)
    default: Any = next((tower[n] for n in TOWER_LAYERS if shrink._is_count(tower.get(n))), None)
    if layers and default and default > layers:  # per-layer lists (stage widths, depths): cut to the tiny stack
        for name, value in shrunk.items():
            if isinstance(value, list) and len(value) == default and name not in TOWER_INDEX_LISTS:
                shrunk[name] = value[:layers]
        for name in TOWER_INDEX_LISTS:
            if isinstance(shrunk.get(name), list):
                shrunk[name] = sorted({min(i, layers - 1) for i in shrunk[name] if isinstance(i, int)})
    _scale_images(shrunk)
    return shrunk


def _scale_images(tower: dict) -> None:
    """Images of GRID x GRID patches, and the position tables sized for them."""
    patch: Any = tower.get("patch_size")
    if not shrink._is_count(patch):
        return
    for name in IMAGE_SIZES:
        if isinstance(tower.get(name), list):
            tower[name] = [patch * GRID] * len(tower[name])
        elif shrink._is_count(tower.get(name)):
            tower[name] = patch * GRID
    for name in POSITION_TABLES:
        if shrink._is_count(tower.get(name)):
            tower[name] = max(GRID * GRID * 4, 64)


def _clip_feature_layers(config: dict, layers: int) -> None:
    """Settings naming a tower's layers, kept inside the tiny tower of ``layers`` layers: a hidden state's index
    (FEATURE_LAYERS: the embeddings' output, then each layer's) or a layer's own (TOWER_LAYER_INDEXES)."""
    for names, count in ((FEATURE_LAYERS, layers + 1), (TOWER_LAYER_INDEXES, layers)):
        for path in names:
            *parents, name = path.split(".")
            holder = functools.reduce(lambda level, key: level.get(key) or {}, parents, config)
            value = holder.get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                holder[name] = _clip_index(value, count)
            elif isinstance(value, list):
                holder[name] = [_clip_index(i, count) for i in value if isinstance(i, int)]


def _clip_index(index: int, count: int) -> int:
    """``index`` into ``count`` items, clipped inside them (a negative one counts from the end)."""
    return max(index, -count) if index < 0 else min(index, count - 1)


def _remap_special_tokens(config: dict) -> None:
    """Every special token id of the top level and of the text config inside the text vocabulary, one map for
    both (the image token is named at either level)."""
    text = next((config[k] for k in TEXT_KEYS if isinstance(config.get(k), dict)), config)
    vocab = text.get("vocab_size") or config.get("vocab_size") or shrink.VOCAB
    if shrink._is_count(config.get("vocab_size")):
        config["vocab_size"] = vocab
    levels = [config] if text is config else [config, text]
    ids = sorted({i for level in levels for name in shrink._special_token_names(level) for i in shrink._ids(level[name])})
    taken = {i for i in ids if i < vocab}
    free = (i for i in range(vocab - 1, -1, -1) if i not in taken)
    new_id = {i: (i if i < vocab else next(free)) for i in ids}
    for level in levels:
        for name in shrink._special_token_names(level):
            value = level[name]
            level[name] = [new_id.get(i, i) for i in value] if isinstance(value, list) else new_id.get(value, value)
