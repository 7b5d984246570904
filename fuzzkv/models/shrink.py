"""A tiny twin of every causal-LM architecture the installed transformers knows, from its config class alone.

Fuzzing a KV cache needs the architecture, not its size: a model of width 64 with one layer of each kind
its family stacks (attention, sliding window, Mamba, linear attention, MoE, ...) runs every cache path the
full model runs, in milliseconds. ``tiny_config(model_type)`` shrinks the config class's defaults with one
table of attribute names to tiny values, keeps one layer of each kind, and proves the result by building
the model and running a cached decode step against one uncached pass.

Rules are data: ``TINY`` maps the attribute names families use to tiny values, ``LAYER_KNOBS`` names the
scalars that lay out a hybrid stack, ``FAMILY_FIXES`` holds the few corrections a single family needs.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
from collections.abc import Callable
from typing import Any

import torch
import transformers
from transformers import AutoConfig
from transformers.models.auto import modeling_auto
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.case import wrapped_image

transformers.logging.set_verbosity_error()

HIDDEN, FFN, HEADS, HEAD_DIM, VOCAB, POSITIONS, WINDOW = 64, 128, 4, 16, 512, 128, 8
EXPERTS, EXPERTS_PER_TOKEN, MOE_FFN = 4, 2, 32
SSM_STATE, SSM_HEADS, CONV_KERNEL = 8, 8, 4  # SSM heads x head_dim = expand (2) x hidden
DTYPE_KEYWORD = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"  # 4.x: torch_dtype
PROMPT = 20  # tokens the sanity check prefills: past the window (8) and the chunk (8), positions < 64


def _kv_heads(default: int) -> int:
    """2 KV heads for 4 query heads (GQA), but one where the family is MQA."""
    return 1 if default == 1 else 2


def at_most(tiny: int) -> Callable[[int | None], int]:
    """A count the tiny model never raises: fewer experts, a smaller window, never more than the family had."""
    return lambda default: tiny if default is None else min(default, tiny)


def same_parity(tiny: int) -> Callable[[int], int]:
    """A kernel of the default's parity: an odd one is padded to keep the length ('same': a conformer's convolution
    module pads (kernel - 1) // 2 each side), which an even kernel would shorten by one."""
    return lambda default: tiny - (tiny - default) % 2


# Attribute name -> tiny value, or a function of the default value. Only positive integer defaults are
# shrunk: None and 0 switch a feature off, and it stays off.
TINY: dict[str, int | Callable[[int], int]] = {
    # width
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "n_embed", "dim", "emb_dim", "embedding_dim", "word_embed_proj_dim",
                     "attention_hidden_size", "lru_width", "backbone_hidden_size", "ple_embed_dim",
                     "conv_dim"), HIDDEN),  # conv_dim: a waveform encoder's convolution channels, per layer
    "hidden_size_per_layer_input": HEAD_DIM,
    # feed-forward
    **dict.fromkeys(("intermediate_size", "ffn_dim", "ffn_hidden_size", "n_inner", "dff", "dim_ff", "decoder_ffn_dim",
                     "encoder_ffn_dim", "intermediate_size_mlp", "dense_intermediate_size", "prefix_dense_intermediate_size",
                     "d_inner", "feed_forward_size"), FFN),
    # attention heads
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads", "attention_heads", "decoder_attention_heads",
                     "encoder_attention_heads", "swa_num_attention_heads", "index_n_heads", "indexer_n_heads"), HEADS),
    **dict.fromkeys(("num_key_value_heads", "num_kv_heads", "n_kv_heads", "kv_n_heads", "swa_num_key_value_heads",
                     "num_query_groups", "indexer_kv_heads"), _kv_heads),
    **dict.fromkeys(("head_dim", "d_head", "dim_head", "kv_channels", "swa_head_dim", "attention_head_size",
                     "index_head_dim", "indexer_head_dim", "qk_head_dim"), HEAD_DIM),
    "rotary_dim": HEAD_DIM // 2,  # partial rotary stays partial
    # vocabulary and positions
    **dict.fromkeys(("vocab_size", "decoder_vocab_size", "unpadded_vocab_size", "vocab_size_per_layer_input",
                     "audio_vocab_size"), at_most(VOCAB)),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "max_target_positions",
                     "context_length", "original_max_position_embeddings", "model_max_length",
                     "position_bias_max_distance"), POSITIONS),
    # windows and chunks: smaller than the prompt, so the window slides and chunks split
    **dict.fromkeys(("sliding_window", "attention_window_size", "window_size", "local_attention", "sliding_window_size",
                     "local_attention_window_len", "keep_window_size", "attention_chunk_size", "chunk_size",
                     "mamba_chunk_size", "index_block_size", "index_topk", "floor_scale", "log_scaling_n_floor",
                     "rel_extent"), at_most(WINDOW)),
    "index_topk_blocks": at_most(2),
    "index_kpool": at_most(4),  # GLM-5's indexer pools keys: index_topk (8) must be a multiple, 2 pools of 4 chosen
    # mixture of experts: routing on, with a dense layer first where the family has one
    **dict.fromkeys(("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts"), EXPERTS),
    **dict.fromkeys(("num_experts_per_tok", "num_experts_per_token", "moe_k", "moe_topk", "moe_top_k", "top_k_experts"),
                    at_most(EXPERTS_PER_TOKEN)),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "moe_shared_expert_intermediate_size",
                     "shared_intermediate_size", "shared_experts_intermediate_size", "expert_ffn_hidden_size"), MOE_FFN),
    **dict.fromkeys(("n_shared_experts", "num_shared_experts", "moe_num_shared_experts"), at_most(1)),
    **dict.fromkeys(("first_k_dense_replace", "num_dense_layers", "n_group", "topk_group", "num_expert_group",
                     "decoder_sparse_step", "interleave_moe_layer_step", "moe_layer_interval", "zero_expert_num"), at_most(1)),
    # multi-head latent attention
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
    "o_lora_rank": 16, "o_groups": 2,
    # state-space and convolution state
    **dict.fromkeys(("state_size", "mamba_d_state", "ssm_state_size"), SSM_STATE),
    **dict.fromkeys(("conv_kernel", "mamba_d_conv", "conv1d_width", "linear_conv_kernel_dim", "short_conv_kernel_size",
                     "ple_conv_kernel_size"), CONV_KERNEL),
    "conv_kernel_size": same_parity(CONV_KERNEL),
    **dict.fromkeys(("n_groups", "mamba_n_groups", "mamba_ngroups"), 1),
    **dict.fromkeys(("time_step_rank", "mamba_dt_rank"), 8),
    **dict.fromkeys(("expand", "mamba_expand"), 2),
    **dict.fromkeys(("mamba_n_heads", "mamba_num_heads", "n_mamba_heads"), SSM_HEADS),
    **dict.fromkeys(("mamba_d_head", "mamba_head_dim", "mamba_headdim", "attention_head_dim"), HEAD_DIM),
    "mamba_d_ssm": SSM_HEADS * HEAD_DIM,
    # linear attention
    **dict.fromkeys(("linear_num_key_heads", "linear_num_heads"), 2),
    "linear_num_value_heads": HEADS,
    **dict.fromkeys(("linear_key_head_dim", "linear_value_head_dim", "linear_head_dim"), HEAD_DIM),
    # low-rank side paths
    **dict.fromkeys(("adapter_rank", "gated_norm_rank", "hc_lowrank", "loop_gate_rank", "laurel_rank", "d_rel"), 8),
}

# Sizes whose None default is no switch but a gap the model cannot run with (hunyuan's head_dim, nemotron's
# KV heads, deepseek_v2's experts per token, dots1's experts): filled with the tiny value.
FILL_WHEN_NONE = ("head_dim", "num_key_value_heads", "num_experts_per_tok", "n_routed_experts", "n_shared_experts")
# (attribute, partner): where the defaults have them equal, the tiny attribute takes the partner's tiny value
# (MLA rotates head_dim = qk_rope_head_dim dimensions of each head).
TIES = (("head_dim", "qk_rope_head_dim"),)

# Constraints that come with a feature: attribute present (positive) in the config -> values it forces.
WHEN = {
    "kv_lora_rank": {"num_key_value_heads": HEADS},  # MLA decompresses keys per query head: no grouping
}

# Runtime switches the tiny model needs on a CPU without custom kernels.
SWITCHES = {"use_mamba_kernels": False}

LAYER_COUNTS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "num_blocks")
# Lists of layer indices (the layers that are attention, MoE, ...): remapped onto the kept layers.
INDEX_LISTS = ("full_attn_idxs", "moe_layers", "mlp_only_layers", "hybrid_layer_ids", "attn_layer_indices",
               "local_layer_ids", "ple_layer_ids")
# Scalars that lay out a hybrid stack (periods, offsets, first/last layer of a kind): searched, small, until
# the tiny stack has the same layer kinds as the default one.
LAYER_KNOBS = ("attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset",
               "sliding_window_pattern", "global_attn_every_n_layers", "no_rope_layer_interval",
               "interleave_moe_layer_step", "decoder_sparse_step", "moe_layer_interval", "moe_layer_start_index",
               "moe_layer_end_index", "max_window_layers", "layer_group_size", "num_kv_shared_layers",
               "n_layers_per_attn_res_block", "loop_layer_index_start", "loop_layer_index_end",
               "first_k_dense_replace", "num_dense_layers")
MAX_KNOB_TRIALS = 400  # per stack length: a bound on the search, far above what any family needs
MAX_EXTRA_LAYERS = 3  # a cyclic pattern (recurrent, recurrent, attention) may need more layers than kinds
# Layers of each kind to keep: one, else two where a family cannot build a single one (zamba ties the weights
# of its shared attention block across its hybrid layers, and needs two of them).
LAYERS_PER_KIND = (1, 2)

# Corrections one family needs: an attribute name only it uses, or a constraint only it has.
FAMILY_FIXES: dict[str, dict] = {
    "mamba2": {"num_heads": SSM_HEADS},  # mamba2's num_heads are SSM heads: heads x head_dim = expand x hidden
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},  # (pattern, repeats) must spell the kept layers
    # defaults the model cannot run with (transformers 5.24): filled so the family can be fuzzed
    "dbrx": {"attn_config": {"model_type": "", "kv_n_heads": 1, "rope_theta": 10000.0, "clip_qkv": 8.0}},  # read, unset
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},  # no default layout: one conv, one attention layer
    "qwen4_exp_text": {"indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 8,
                       "indexer_compress_ratio": 4},  # its indexed attention has no default indexer
    "dots3_note_text": {"head_dim": 20},  # sliding layers: head_dim = their qk_nope (192 -> 12) + qk_rope (8)
    "hrm_text": {"num_layers_per_stack": None},  # derived again from the tiny num_hidden_layers
    # its decoder reads num_key_value_heads, which the config class does not declare (released checkpoints and
    # transformers' own tests set it), and views its queries by it: as many KV heads as query heads
    "moonshine_streaming": {"num_key_value_heads": HEADS},
    # Pix2Struct's text attention projects its heads back with Linear(hidden, hidden) (modeling_pix2struct.py
    # Pix2StructTextAttention.output): heads x d_kv must be the width, as released (12 x 64 = 768)
    "pix2struct_text_model": {"d_kv": HIDDEN // HEADS},
    "step3p5": {"sliding_window": WINDOW},  # released: 128 tokens; its default None would leave the window unset
    # one input, one recurrent, one output layer, written as dory serialises them: (attention, mlp) pairs, doubled
    "dory": {"layer_types": ["sliding_attention", "mlp", "full_attention", "mlp", "sliding_attention", "mlp"],
             "num_hidden_layers": 6, "n_input_layers": 2, "n_recurrent_layers": 2, "n_output_layers": 2},
}

# Families whose default config lays out a stack no released checkpoint has, with the layout the released
# checkpoints follow (applied to the defaults, so --scale full and the tiny twin both get it). Bamba-9B and
# Granite 4.0-H interleave attention layers with their Mamba2 layers; their defaults are Mamba2 only, a stack
# whose cache cannot even report its length (transformers 5.24 raises in get_seq_length). LFM2's default has
# no convolution layer at all, so its convolution state would never be fuzzed.
RELEASED_LAYOUTS: dict[str, dict] = {
    "bamba": {"attn_layer_indices": [9, 18, 27]},  # Bamba-9B: 3 attention layers in 32
    "granitemoehybrid": {"layer_types": ["attention" if i % 10 == 9 else "mamba" for i in range(32)]},  # 1 in 10
    # LFM2: 10 short-convolution and 6 attention blocks in 16 (the default is attention only, so no conv state)
    "lfm2": {"num_hidden_layers": 16, "full_attn_idxs": [2, 5, 8, 10, 12, 14],
             "layer_types": ["full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)]},
    # Step 3.5 / 3.7's text model (Step3p7's text_config): 3 sliding-window layers to 1 global one (its window:
    # FAMILY_FIXES). Its default is global only, with no window, which its forward cannot run (transformers 5.25's
    # Step3p7TextModel always builds the sliding mask, and that raises without a window).
    "step3p5": {"layer_types": ["full_attention" if i % 4 == 0 else "sliding_attention" for i in range(45)]},
}

# What the config class cannot tell: families whose causal-LM head is not a left-to-right decoder.
KIND_TABLE = {
    "reformer": ("encoder", "Reformer's LM head needs is_decoder=True, and its LSH/chunked attention keeps no KV cache"),
    "xlnet": ("permutation-lm", "XLNet is a permutation LM: its memory (mems) is not a KV cache"),
}

KEEP_OUT = ("_name_or_path", "transformers_version")  # provenance, not architecture


class CannotBuild(Exception):
    """A config the shrinker cannot make valid; str(exc) is one line saying why."""


class _ConstructionFailed(CannotBuild):
    """The model class itself could not be built from the config (a deeper stack may build: zamba)."""


# The generative model types fuzzkv lists, by the auto mapping that lists them (what the model generates from), in
# order: a type's class is the first listing's. A release without one of these mappings has none of its types.
GENERATIVE_MAPPINGS = (
    ("causal-lm", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("image-text-to-text", "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"),
    ("multimodal-lm", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES"),
    ("seq2seq", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("speech-seq2seq", "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES"),
)
# What a model type that no causal-LM mapping lists is, by the first mapping that does, and whether fuzzkv drives
# it yet (a type of a kind in FUZZED_KINDS is fuzzed where it builds).
NOT_CAUSAL = {
    "image-text-to-text": ("multimodal", "an image-text-to-text model: generates from pixel values and text"),
    "multimodal-lm": ("multimodal", "a multimodal LM: generates from pixel or audio values and text"),
    "seq2seq": ("encoder-decoder", "a seq2seq model: its decoder attends to an encoder's output"),
    "speech-seq2seq": ("encoder-decoder", "a speech seq2seq model: its decoder attends to an audio encoder's output"),
}
# The kinds fuzzkv fuzzes: a left-to-right decoder over token ids, alone, attending to a text encoder's output, or
# over token ids and images (a vision-language model's image-text-to-text class).
FUZZED_KINDS = ("decoder-only", "encoder-decoder", "multimodal")
NOT_IMAGE_TEXT = ("no image-text-to-text class over a vision_config and no audio tower (a VQ image tokenizer, a protein "
                  "encoder, an encoder-decoder, ...): not fuzzed yet")
NO_IMAGE_TOKEN = ("its config declares no image (or audio) token (the image is placed otherwise: prepended, "
                  "cross-attended, queried): not fuzzed yet")
NO_ENCODER_IMAGE = ("an image-text-to-text encoder-decoder whose encoder takes its image otherwise than as pixel "
                    "values or patches beside a vision_config (T5Gemma 2's encoder config, UDOP's layout boxes): not "
                    "fuzzed yet")
# Encoder-decoder types are built as their seq2seq LM class (BART, not its decoder half BartForCausalLM), or their
# speech seq2seq class (Whisper), fed audio features drawn from a case's encoder ids (``hf_paths.encoder_keywords``).
SEQ2SEQ_TABLE = "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"
IMAGE_TEXT_TABLE = "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES"
# A speech encoder's positions: Whisper's window of 2 x 64 mel frames, Speech2Text's subsampled frames of up to 64.
AUDIO_POSITIONS = 64
# An encoder-decoder config's layer counts, per stack: each kept to one layer (both stacks are one kind).
ENCODER_DECODER_LAYERS = ("encoder_layers", "decoder_layers", "num_layers", "num_decoder_layers", "encoder_num_layers")


@functools.cache
def generative_types() -> dict[str, tuple[tuple[str, str], ...]]:
    """Every generative model type of the installed transformers, sorted: its (mapping, class name) pairs, in
    GENERATIVE_MAPPINGS' order."""
    found: dict[str, list[tuple[str, str]]] = {}
    for mapping, table in GENERATIVE_MAPPINGS:
        for model_type, class_name in vars(modeling_auto).get(table, {}).items():
            found.setdefault(model_type, []).append((mapping, class_name))
    return {model_type: tuple(found[model_type]) for model_type in sorted(found)}


def model_class(model_type: str) -> str:
    """The class transformers builds for ``model_type``: an encoder-decoder's seq2seq LM class and a vision-language
    model's image-text-to-text class, where those mappings list one; else the first generative mapping's."""
    family = kind(model_type)[0]
    table = {"encoder-decoder": SEQ2SEQ_TABLE, "multimodal": IMAGE_TEXT_TABLE}.get(family)
    return vars(modeling_auto).get(table or "", {}).get(model_type) or generative_types()[model_type][0][1]


def fuzzed(model_type: str) -> bool:
    """Whether fuzzkv fuzzes ``model_type``'s kind (where its tiny twin builds)."""
    return kind(model_type)[0] in FUZZED_KINDS


def causal_lm_types() -> list[str]:
    """Every model_type the installed transformers maps to a causal-LM class (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES), sorted."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def causal_lm_class(model_type: str) -> str:
    """The causal-LM class name transformers builds for ``model_type``, e.g. "Qwen3ForCausalLM"."""
    return MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]


def kind(model_type: str) -> tuple[str, str]:
    """("decoder-only", "") or (other kind, reason): "encoder" (a BERT-like encoder whose causal-LM head needs
    is_decoder), "encoder-decoder" (the decoder half of a seq2seq model), "multimodal" (needs pixel/audio inputs
    or a composite config), "composite" (a text model assembled from sub-models), "permutation-lm".
    Fuzzing targets decoder-only."""
    if model_type in KIND_TABLE:
        return KIND_TABLE[model_type]
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:  # listed by another generative mapping only
        family = NOT_CAUSAL[generative_types()[model_type][0][0]]
        # an audio LM the seq2seq mapping lists first (Audio Flamingo 3): one decoder over text and audio
        defaults = _class_defaults(model_type)
        return NOT_CAUSAL["multimodal-lm"] if family[0] == "encoder-decoder" and has_audio_tower(defaults) and \
            not defaults.get("is_encoder_decoder") else family
    text = text_decoder_type(model_type)
    if text is not None:  # a composite config whose causal-LM class takes token ids alone: its text decoder
        return kind(text)
    config_class = CONFIG_MAPPING[model_type]
    towers = [name for name, sub in (getattr(config_class, "sub_configs", None) or {}).items()
              if getattr(sub, "model_type", None) != ""]  # "" marks a part of the decoder (dbrx, mpt attn_config)
    if any(modality in name for name in towers for modality in ("vision", "audio", "vq", "image")):
        return "multimodal", f"a composite config with {', '.join(towers)}: needs pixel/audio inputs"
    if towers:
        return "composite", f"a composite config ({', '.join(towers)}): sub-models, not one decoder stack"
    defaults = _class_defaults(model_type)
    if defaults.get("is_encoder_decoder"):
        return "encoder-decoder", "a seq2seq model: its decoder attends to an encoder's output"
    if _needs_is_decoder(model_type, defaults):
        return "encoder", "a BERT-like encoder: its causal-LM head needs is_decoder=True"
    return "decoder-only", ""


def text_decoder_type(model_type: str) -> str | None:
    """The model type of the text config a composite model type's causal-LM class is built on, where that class
    takes token ids alone (its config class is a text sub-config's, itself a causal-LM model type): llama4's
    Llama4ForCausalLM is llama4_text's. None for any other model type."""
    head = getattr(transformers, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type, ""), None)
    text = getattr(getattr(head, "config_class", None), "model_type", None)
    return text if text and text != model_type and text in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES else None


def _needs_is_decoder(model_type: str, defaults: dict) -> bool:
    """Whether the causal-LM class is a BERT-like encoder's head, which needs ``is_decoder=True``. transformers 5.x
    says so in the config class's defaults. 4.x gives every config is_decoder=False and add_cross_attention, so only
    the head's own constructor says it: it reads ``config.is_decoder`` (to warn "add `is_decoder=True`")."""
    if hf_paths.transformers_major() >= 5:
        return bool((defaults.get("is_decoder") is False and "add_cross_attention" in defaults)
                    or defaults.get("is_encoder"))
    head = getattr(transformers, causal_lm_class(model_type), None)
    try:
        return head is not None and "is_decoder" in inspect.getsource(head.__init__)
    except (OSError, TypeError):  # no source to read (a compiled install): not an encoder's head by its own word
        return False


def _class_defaults(model_type: str) -> dict:
    """The config class's declared defaults, without running its validation (some defaults do not validate)."""
    config_class = CONFIG_MAPPING[model_type]
    fields = getattr(config_class, "__dataclass_fields__", {})
    try:
        return config_class().to_dict()
    except Exception:  # noqa: BLE001 - a default that fails its own validation still declares its fields
        return {name: field.default for name, field in fields.items() if not callable(field.default)}


def default_config(model_type: str) -> dict:
    """The config class's defaults (for_model(model_type).to_dict()), JSON-serialisable, with "model_type", and
    the layer layout of the family's released checkpoints where the defaults have none (``RELEASED_LAYOUTS``). A
    composite model type whose causal-LM class takes token ids alone gives its text decoder's."""
    model_type = text_decoder_type(model_type) or model_type
    try:
        config = AutoConfig.for_model(model_type, **RELEASED_LAYOUTS.get(model_type, {}))
    except Exception as exc:  # noqa: BLE001 - a config class whose own defaults do not validate
        raise CannotBuild(f"its default config does not validate: {_first_line(exc)}") from None
    return _plain(config.to_dict(), model_type)


def _plain(config: dict, model_type: str) -> dict:
    """``config`` as JSON would give it back, with model_type and without provenance."""
    data = json.loads(json.dumps(config, default=str))
    for key in KEEP_OUT:
        data.pop(key, None)
    data["model_type"] = model_type
    return data


def _first_line(exc: BaseException) -> str:
    """The exception in one line: its type and first line, or the cause a validation error wraps."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "Class validation error for validator ...:" then the cause
        return lines[1]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# ---- shrinking scalars ----------------------------------------------------------------------------------------


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _tiny_value(name: str, value):
    rule = TINY.get(name)
    if rule is None or not (_is_count(value) or value is None and name in FILL_WHEN_NONE):
        return value
    return rule(value) if callable(rule) else rule


def is_sub_config(value: Any) -> bool:
    """Whether a config dict's ``value`` is a sub-config (a dict naming its model type), not a plain setting."""
    return isinstance(value, dict) and "model_type" in value


def has_audio_tower(defaults: dict) -> bool:
    """Whether a config class's ``defaults`` declare an audio tower (``hf_paths.AUDIO``'s keys): an audio LM."""
    return any(isinstance(defaults.get(tower), dict) for tower in hf_paths.AUDIO.towers)


def _shrink_scalars(config: dict) -> dict:
    """Every attribute TINY names, at its tiny value; sub-config dicts (a decoder's parts) shrunk alike."""
    shrunk: dict = {}
    for name, value in config.items():
        if is_sub_config(value):
            shrunk[name] = _shrink_scalars(value)
        elif isinstance(value, list) and name in TINY:
            shrunk[name] = [_tiny_value(name, item) for item in value]
        else:
            shrunk[name] = _tiny_value(name, value)
    return shrunk


SPECIAL_TOKEN_SUFFIXES = ("token_id", "token_ids", "token_index")
# ids under names of no such ending: MiniCPM-V 4.7's image markers (configuration_minicpmv4_7.py)
SPECIAL_TOKEN_NAMES = ("mask_index", "unk_index", "image_start_id", "image_end_id", "slice_start_id", "slice_end_id",
                       "newline_id")


def _special_token_names(config: dict) -> list[str]:
    return [name for name in config if name.endswith(SPECIAL_TOKEN_SUFFIXES) or name in SPECIAL_TOKEN_NAMES]


def _remap_special_tokens(config: dict, vocab: int) -> dict:
    """Special token ids inside the tiny vocabulary: ids already inside stay, the others take distinct ids
    counted down from the top (so bos, eos and pad stay distinct), lists of ids alike."""
    names = _special_token_names(config)
    ids = sorted({i for name in names for i in _ids(config[name])})
    taken = {i for i in ids if i < vocab}
    free = (i for i in range(vocab - 1, -1, -1) if i not in taken)
    new_id = {i: (i if i < vocab else next(free)) for i in ids}
    remapped = dict(config)
    for name in names:
        value = config[name]
        remapped[name] = [new_id.get(i, i) for i in value] if isinstance(value, list) else new_id.get(value, value)
    return remapped


def _ids(value) -> list[int]:
    values = value if isinstance(value, list) else [value]
    return [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >= 0]


# ---- layer kinds ----------------------------------------------------------------------------------------------


def layer_count(config) -> int:
    """The number of layers of a config object (whichever name its family uses)."""
    counts = [getattr(config, name, None) for name in LAYER_COUNTS]
    return next((int(value) for value in counts if isinstance(value, int) and _is_count(value)), 0)


def layer_views(config) -> dict[str, list]:
    """Every per-layer list a config object exposes, stored or computed (layer_types, layers_block_type, a
    hybrid_override_pattern string, index lists as membership), each as long as the stack."""
    layers = layer_count(config)
    views: dict[str, list] = {}
    for name, overrides in config.to_dict().items():
        if _is_layer_dict(overrides):  # per-layer overrides (gemma4's wider global-attention heads): which ones
            by_layer = {int(key): value for key, value in overrides.items()}
            views[name] = [",".join(sorted(by_layer.get(i, {}))) for i in range(layers)]
    for name in dir(config):
        if name.startswith("__"):
            continue
        try:
            value = getattr(config, name)
        except Exception:  # noqa: BLE001 - a computed attribute that does not apply to this config
            continue
        if name in INDEX_LISTS and isinstance(value, list | tuple):
            views[name] = [i in set(value) for i in range(layers)]
        elif isinstance(value, list | tuple) and len(value) == layers and layers > 1:
            views[name] = list(value)
        elif isinstance(value, str) and name.endswith("pattern") and len(value) == layers:
            views[name] = list(value)
    return views


def _is_layer_dict(value) -> bool:
    """A dict of per-layer overrides, keyed by layer index ("05": {"head_dim": 512})."""
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and k.isdigit() and isinstance(v, dict) for k, v in value.items()))


def _ranked(values: list) -> list:
    """Numbers by their rank among the list's distinct values (1 and 16 experts read as 1 and 4 tiny)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        order = sorted(set(values))
        return [order.index(v) for v in values]
    return [str(v) for v in values]


def layer_kinds(config, names=None) -> list[tuple]:
    """Each layer's kind: the tuple of its entries in every per-layer view (or in those ``names``)."""
    views = {name: _ranked(values) for name, values in sorted(layer_views(config).items())
             if names is None or name in names}
    return [tuple((name, values[i]) for name, values in views.items()) for i in range(layer_count(config))]


def _kept_layers(kinds: list[tuple], per_kind: int, extra: int) -> list[int]:
    """The first ``per_kind`` layers of each kind, in stack order, plus ``extra`` more from the bottom (2 at least)."""
    seen: dict[tuple, list[int]] = {}
    for index, layer_kind in enumerate(kinds):
        seen.setdefault(layer_kind, []).append(index)
    kept = {index for indices in seen.values() for index in indices[:per_kind]}
    wanted = max(2, len(kept)) + extra
    for index in range(len(kinds)):
        if len(kept) >= wanted:
            break
        kept.add(index)
    return sorted(kept)


def _select_layers(config: dict, defaults: dict, kept: list[int], default_layers: int) -> dict:
    """``config`` with ``len(kept)`` layers: per-layer lists and patterns cut to the kept layers, index lists
    renumbered, and the layer count set."""
    selected = dict(config)
    for name, value in config.items():
        if name in LAYER_COUNTS and _is_count(value):
            selected[name] = len(kept)
        elif _is_layer_dict(value):
            selected[name] = _select_overrides(value, kept, config, defaults)
        elif name in INDEX_LISTS and isinstance(value, list):
            selected[name] = [new for new, old in enumerate(kept) if old in set(value)]
        elif isinstance(value, list) and len(value) == default_layers:
            selected[name] = [value[i] for i in kept]
        elif isinstance(value, str) and name.endswith("pattern") and len(value) == default_layers:
            selected[name] = "".join(value[i] for i in kept)
    return selected


def _select_overrides(overrides: dict, kept: list[int], shrunk: dict, defaults: dict) -> dict:
    """Per-layer overrides of the kept layers, renumbered, each size scaled as the family's global value was
    (a global-attention head_dim twice the default stays twice the tiny one)."""
    width = len(next(iter(overrides)))
    by_layer = {int(key): value for key, value in overrides.items()}
    return {f"{new:0{width}d}": {name: _scaled(value, shrunk.get(name), defaults.get(name))
                                 for name, value in by_layer[old].items()}
            for new, old in enumerate(kept) if old in by_layer}


def _scaled(value, tiny, default):
    """``value`` scaled by tiny / default, where all three are sizes; else unchanged."""
    if not (_is_count(value) and _is_count(tiny) and _is_count(default)):
        return value
    return max(1, round(tiny * value / default))


def _knob_choices(shrunk: dict, layers: int) -> dict[str, list[int]]:
    """For each layer knob the family has, the values to try: the tiny (or default, clipped) value first."""
    choices = {}
    for name in LAYER_KNOBS:
        if _is_count(shrunk.get(name)):
            first = min(shrunk[name], layers)
            choices[name] = [first] + [v for v in range(layers + 1) if v != first]
    return choices


def _config_object(model_type: str, config: dict):
    rest = {k: v for k, v in config.items() if k != "model_type"}
    return AutoConfig.for_model(model_type, **rest)


def _kinds_of(model_type: str, candidate: dict, names: set[str]) -> set | str:
    """The set of layer kinds of a candidate config dict, as the default's views ``names`` tell them (a family
    fix may lay out what the default left unset), or why the config class rejects it."""
    try:
        return set(layer_kinds(_config_object(model_type, candidate), names))
    except Exception as exc:  # noqa: BLE001 - an invalid combination of knobs: the caller tries the next one
        return _first_line(exc)


def _shrink_layers(model_type: str, defaults: dict, shrunk: dict, per_kind: int) -> dict:
    """The shortest stack (2 layers at least) with ``per_kind`` layers of each kind the default stack has, in
    order: per-layer lists cut, then the layer knobs searched until the config class computes the same kinds."""
    default_object = _config_object(model_type, defaults)
    kinds, default_layers = layer_kinds(default_object), layer_count(default_object)
    wanted, why, kept, names = set(kinds), "", [], set(layer_views(default_object))
    for extra in range(MAX_EXTRA_LAYERS + 1):
        kept = _kept_layers(kinds, per_kind, extra)
        candidate = _select_layers(shrunk, defaults, kept, default_layers)
        choices = _knob_choices(shrunk, len(kept))
        for values in itertools.islice(itertools.product(*choices.values()), MAX_KNOB_TRIALS):
            trial = {**candidate, **dict(zip(choices, values)), **FAMILY_FIXES.get(model_type, {})}
            found = _kinds_of(model_type, trial, names)
            if found == wanted:
                return trial
            why = why or (f"the tiny config does not validate: {found}" if isinstance(found, str) else "")
    raise CannotBuild(why or f"no stack of {len(kept)} layers or fewer keeps its {len(wanted)} layer kinds")


# ---- the tiny config ------------------------------------------------------------------------------------------


def _underived(model_type: str, defaults: dict) -> dict:
    """The defaults without the scalars the config class derives in its __post_init__ (deepseek's head_dim from
    qk_rope_head_dim, zamba's attention_hidden_size = 2 x hidden_size): the class derives them again from the
    tiny values. Derived: not a declared field, or a field declared None that came out set. Per-layer lists
    stay (they are cut to the kept layers), and so do FILL_WHEN_NONE sizes and "auto" ones (set tiny)."""
    fields = _declared_fields(model_type)
    if not fields:
        return dict(defaults)

    def derived(name: str, value) -> bool:
        if isinstance(value, list | dict) or name in FILL_WHEN_NONE or name == "model_type":
            return False
        return name not in fields or (fields[name].default is None and value is not None)

    return {name: value for name, value in defaults.items() if not derived(name, value)}


def _declared_fields(model_type: str) -> dict:
    """The config class's dataclass fields, under the names to_dict writes them (its attribute_map aliases)."""
    config_class = CONFIG_MAPPING[model_type]
    fields = dict(getattr(config_class, "__dataclass_fields__", None) or {})
    aliases = getattr(config_class, "attribute_map", None) or {}
    fields.update({aliases[name]: field for name, field in list(fields.items()) if name in aliases})
    return fields


def _shrunk(model_type: str, defaults: dict) -> dict:
    """Every scalar at its tiny value, with the ties, constraints, switches and family fixes applied, and the
    special tokens inside the tiny vocabulary; the layers are still the default's."""
    shrunk = _shrink_scalars(_underived(model_type, defaults))
    shrunk.update({name: value for name, value in SWITCHES.items() if name in shrunk})
    _constrain(shrunk, defaults)
    shrunk.update(FAMILY_FIXES.get(model_type, {}))  # and again on each cut stack (_shrink_layers): a fix wins
    return _remap_special_tokens(shrunk, shrunk.get("vocab_size") or VOCAB)


def _constrain(shrunk: dict, defaults: dict) -> dict:
    """``shrunk`` (the tiny values of ``defaults``) with the ties and the constraints its features force, in place."""
    for name, partner in TIES:
        if name in shrunk and partner in shrunk and defaults.get(name) == defaults.get(partner):
            shrunk[name] = shrunk[partner]
    for name, forced in WHEN.items():
        if _is_count(shrunk.get(name)):
            shrunk.update({key: value for key, value in forced.items() if key in shrunk})
    return shrunk


@functools.cache
def _tiny_config(model_type: str) -> str:
    text = text_decoder_type(model_type)
    if text is not None:  # what its causal-LM class builds: the text decoder alone
        return _tiny_config(text)
    family, why = kind(model_type)
    if family not in FUZZED_KINDS:
        raise CannotBuild(f"{family}: {why}")
    if family == "multimodal":  # built by fuzzkv.models.vision, over this module's text twins
        raise CannotBuild("multimodal: its tiny twin is fuzzkv.models.vision's (models.twins.tiny_config)")
    defaults = default_config(model_type)
    shrunk = _shrunk(model_type, defaults)
    if family == "encoder-decoder":
        return json.dumps(_proven(model_type, _encoder_decoder_tiny(model_type, shrunk)))
    failures = []
    for per_kind in LAYERS_PER_KIND:
        tiny = _shrink_layers(model_type, defaults, shrunk, per_kind)
        try:
            return json.dumps(_proven(model_type, tiny))
        except _ConstructionFailed as exc:
            failures.append(exc)
    raise CannotBuild(str(failures[0]))  # the smallest stack's reason is the one to report


def _encoder_decoder_tiny(model_type: str, shrunk: dict) -> dict:
    """An encoder-decoder's tiny config: its scalars shrunk, one layer in each stack, a speech encoder's position
    table sized for the tiny audio the path code draws."""
    tiny = _one_layer_stacks(shrunk)
    if tiny.get("decoder_start_token_id") is None:
        # a config without one, as its released checkpoints set it: LongT5's (5.25) the pad token (its _shift_right:
        # "In LongT5 it is usually set to the pad_token_id"); the generic EncoderDecoderModel's the decoder's first
        # token (its documentation: set `decoder_start_token_id` to the tokenizer's cls or bos token)
        decoder: dict = tiny["decoder"] if isinstance(tiny.get("decoder"), dict) else {}
        tiny["decoder_start_token_id"] = next((value for value in (tiny.get("pad_token_id"), tiny.get("bos_token_id"),
                                               decoder.get("bos_token_id")) if isinstance(value, int)), 0)
    if model_type not in vars(modeling_auto).get(SEQ2SEQ_TABLE, {}) and _is_count(tiny.get("max_source_positions")):
        tiny["max_source_positions"] = AUDIO_POSITIONS
    return tiny


def _one_layer_stacks(config: dict) -> dict:
    """``config`` with one layer in each stack it counts, and in each of its sub-configs' (Canary's encoder_config and
    decoder_config, EncoderDecoderModel's encoder and decoder). A stack that lists something per layer (t5gemma's
    layer_types, Moonshine Streaming's encoder's sliding windows) keeps its depth: one layer would lose its kinds."""
    counts = [name for name in (*ENCODER_DECODER_LAYERS, *LAYER_COUNTS) if _is_count(config.get(name))]
    depths = {config[name] for name in counts}
    uniform = not any(isinstance(value, list) and len(value) in depths for value in config.values())
    return {name: 1 if name in counts and uniform
            else _one_layer_stacks(value) if is_sub_config(value) else value
            for name, value in config.items()}


def _proven(model_type: str, tiny: dict) -> dict:
    """``tiny`` as the config class writes it, once its model has built and run a cached decode step."""
    try:
        tiny = _plain(_config_object(model_type, tiny).to_dict(), model_type)
    except Exception as exc:  # noqa: BLE001 - the family rejects the shrunk values: say why
        raise CannotBuild(f"the tiny config does not validate: {_first_line(exc)}") from None
    try:
        model = build(tiny)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises is the reason it cannot be fuzzed
        raise _ConstructionFailed(_first_line(exc)) from None
    try:
        cached_vs_uncached(model)
    except CannotBuild:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the model raises is the reason it cannot be fuzzed
        raise CannotBuild(_first_line(exc)) from None
    return tiny


def shallow_config(config: dict) -> tuple[dict, str]:
    """``config`` (a released model's) with only its depth and its vocabulary shrunk: one layer of each kind and a
    VOCAB-token vocabulary (special tokens remapped inside it), every other setting (widths, heads, attention scale,
    softcaps, windows) as released; and one line saying what was shrunk. For a library release that builds an
    architecture only from its official configs, both sides of a comparison are built from this."""
    model_type = config["model_type"]
    narrow = _remap_special_tokens({**config, "vocab_size": min(VOCAB, config["vocab_size"])}, VOCAB)
    shallow = _plain(_config_object(model_type, _shrink_layers(model_type, config, narrow, 1)).to_dict(), model_type)
    shrunk = ", ".join(f"{name} {config[name]} -> {shallow[name]}" for name in ("num_hidden_layers", "vocab_size")
                       if config.get(name) != shallow.get(name))
    return shallow, shrunk


def tiny_config(model_type: str) -> dict:
    """The generic tiny twin of model_type's default config: a JSON-serialisable dict with "model_type", that
    AutoConfig.for_model(model_type, **rest) accepts and AutoModelForCausalLM.from_config builds and runs.
    Raises CannotBuild(reason) when it cannot be made valid."""
    return json.loads(_tiny_config(model_type))


# ---- building and the sanity check ----------------------------------------------------------------------------


def build(config: dict, attn: str = "eager") -> transformers.PreTrainedModel:
    """The model of a config dict, in float32 with transformers' own init, in eval mode."""
    built = _config_object(config["model_type"], config)
    model = hf_paths.auto_class(built).from_config(built, attn_implementation=attn, **{DTYPE_KEYWORD: torch.float32})
    model.config.use_cache = True
    return model.eval()


@torch.no_grad()
def cached_vs_uncached(model: transformers.PreTrainedModel, seed: int = 0) -> float:
    """The largest |logit difference| between a cached decode step (prefill PROMPT tokens, then one) and one
    uncached pass over the same tokens: ~1e-6 for a correct cache."""
    step, full = decode_step_logits(model, seed)
    return float((step - full).abs().max())


@torch.no_grad()
def decode_step_logits(model: transformers.PreTrainedModel, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The last position's logits from a cached decode step and from one uncached pass: ([1, V], [1, V]).
    Driven by fuzzkv's own path code (``hf_paths``), so a model builds here exactly when fuzzkv can drive it."""
    if hf_paths.declared_cache_keyword(model) is None:
        raise CannotBuild(f"{type(model).__name__}.forward takes no cache (only its own state, if any)")
    vocab = model.config.get_text_config().vocab_size
    tokens = torch.randint(0, vocab, (PROMPT + 2,), generator=torch.Generator().manual_seed(seed)).tolist()
    case = {"prompts": [tokens[:PROMPT]], "padding_side": "left", "max_new_tokens": 2, "prefill_chunks": [PROMPT],
            "cache": "dynamic", "continuation": [tokens[PROMPT:]]}
    if model.config.is_encoder_decoder:  # its decoder attends to the encoder's output of these tokens
        case["encoder"] = [tokens[:PROMPT]]  # (an image encoder's: an image drawn from them, hf_paths.encoder_keywords)
        if model.config.model_type in vars(modeling_auto).get(IMAGE_TEXT_TABLE, {}) and \
                hf_paths.encoder_tower(model) is None:  # its image would go where the path code puts none
            raise CannotBuild(f"multimodal: {NO_ENCODER_IMAGE}")
    image = hf_paths.image_token(model)
    if image is None and hf_paths.declares_tower(model):
        raise CannotBuild(f"multimodal: {NO_IMAGE_TOKEN}")
    if image is not None:  # a vision-language model: one image after the prompt's first token
        opening, closing = hf_paths.image_edges(model)
        edges = set(hf_paths.image_ids(model))  # never text: the image token, its wrapping, its markers
        text = [t if t not in edges else next(u for u in range(vocab) if u not in edges) for t in tokens]
        prompt = text[:1] + list(wrapped_image(image, hf_paths.tokens_per_image(model), opening, closing)) + \
            text[1:PROMPT]
        case.update(prompts=[prompt], continuation=[text[PROMPT:]], prefill_chunks=[len(prompt)])
    sequence, mask, cached = hf_paths.cached(model, case, 0, "cpu")
    full = hf_paths.reference(model, sequence, mask, hf_paths.encoder_inputs(case, 0, "cpu"))
    return cached[:, -1], full[:, -1]


# ---- features -------------------------------------------------------------------------------------------------

FEATURES = ("alibi", "rope", "learned-positions", "sliding-window", "chunked-window", "sinks", "softcap", "gqa", "mqa",
            "mla", "moe", "ssm", "linear-attention", "conv-state", "recurrent")
ROPE_KEYS = ("rope_parameters", "rope_theta", "rotary_dim", "rope_scaling", "partial_rotary_factor", "rotary_pct")
POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_target_positions")
RELATIVE_POSITION_KEYS = ("d_rel", "rel_extent", "position_bias_num_buckets", "relative_attention_num_buckets")
WINDOW_KEYS = ("sliding_window", "attention_window_size", "window_size", "local_attention", "sliding_window_size",
               "local_attention_window_len")
SOFTCAP_KEYS = ("attn_logit_softcapping", "final_logit_softcapping", "logits_soft_cap", "output_logit_soft_cap")
MOE_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
SSM_KEYS = ("state_size", "mamba_d_state", "ssm_state_size")
LINEAR_ATTENTION_KEYS = ("linear_num_key_heads", "linear_num_heads", "linear_key_head_dim", "linear_head_dim")
CONV_KEYS = ("conv_kernel", "mamba_d_conv", "conv1d_width", "linear_conv_kernel_dim", "short_conv_kernel_size",
             "conv_kernel_size", "conv_L_cache")
RECURRENT_KEYS = ("lru_width", "n_recurrent_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads", "num_heads")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_kv_heads", "kv_n_heads", "num_query_groups")
# What a config dict cannot tell: features a family always has.
FAMILY_FEATURES = {
    "bloom": {"alibi"},
    "gpt_oss": {"sinks"},
    "rwkv": {"recurrent"},
    "xlstm": {"recurrent"},
    "gpt2": {"learned-positions"},
}


def _set(config: dict, keys) -> bool:
    return any(config.get(key) not in (None, 0, False) for key in keys)


def _layer_type_names(config: dict) -> set[str]:
    names: set[str] = set()
    for key in ("layer_types", "layers_block_type", "block_types", "attention_layers"):
        value = config.get(key)
        if isinstance(value, list):
            names.update(str(v) for v in value)
    return names


def _heads(config: dict) -> tuple[int | None, int | None]:
    heads = next((config[k] for k in HEAD_KEYS if _is_count(config.get(k))), None)
    kv = next((config[k] for k in KV_HEAD_KEYS if _is_count(config.get(k))), None)
    if config.get("multi_query") is True:
        kv = 1
    return heads, kv


def features(config: dict) -> tuple[str, ...]:
    """Cache features detected from a config dict, from FEATURES (order fixed)."""
    parts = [value for value in config.values() if isinstance(value, dict)]  # a decoder's parts (mpt, dbrx)
    flat = {k: v for part in parts for k, v in part.items()} | config
    layer_types = _layer_type_names(flat)
    heads, kv = _heads(flat)
    always = FAMILY_FEATURES.get(str(config.get("model_type")), set())
    alibi = flat.get("alibi") is True or "alibi" in always
    rope = not alibi and _set(flat, ROPE_KEYS)
    ssm = _set(flat, SSM_KEYS)
    linear = _set(flat, LINEAR_ATTENTION_KEYS) or (not ssm and "linear_attention" in layer_types)
    detected = {
        "alibi": alibi,
        "rope": rope,
        # a state-space or linear-attention stack keeps max_position_embeddings without any position embedding
        "learned-positions": not (rope or alibi or ssm or linear or _set(flat, RELATIVE_POSITION_KEYS))
                             and _set(flat, POSITION_KEYS),
        # a window applies unless the layer types say every attention layer is full
        "sliding-window": _set(flat, WINDOW_KEYS) and flat.get("use_sliding_window") is not False
                          and (any("sliding" in t or "local" in t for t in layer_types)
                               or not any("full" in t for t in layer_types)),
        "chunked-window": _set(flat, ("attention_chunk_size",)) or "chunked_attention" in layer_types,
        "sinks": "learnable_sink_init" in flat,
        "softcap": _set(flat, SOFTCAP_KEYS),
        "gqa": heads is not None and kv is not None and 1 < kv < heads,
        "mqa": heads is not None and kv == 1 and heads > 1,
        "mla": _set(flat, ("kv_lora_rank",)),
        "moe": any(_is_count(flat.get(k)) and flat[k] > 1 for k in MOE_KEYS),
        "ssm": ssm,
        "linear-attention": linear,
        "conv-state": _set(flat, CONV_KEYS),
        "recurrent": _set(flat, RECURRENT_KEYS),
    }
    return tuple(name for name in FEATURES if detected[name] or name in always)
