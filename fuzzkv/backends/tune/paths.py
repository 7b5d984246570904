"""How fuzzkv drives torchtune: build its model from an HF model, then its cached and uncached paths.

Like :mod:`fuzzkv.backends.hf.paths`, this module is standalone (torch, torchtune, and transformers
only through the HF model it converts; no ``from __future__``): the torchtune backend runs it, and
torchtune reproduction scripts embed its source after ``hf_paths``'s, so a script runs the very code
fuzzkv ran. Its ``cached``, ``reference``, ``reused`` and ``generate`` take the same arguments as
``hf_paths``'s and, embedded after them, replace them: a script's comparisons call them unchanged.
(Imports from ``fuzzkv.backends`` are dropped when embedded: that source precedes this one.)

The model is built from the HF model's config with torchtune's own component builder and its weights
mapped with torchtune's own converter (never by hand), so a wrong conversion is torchtune's.
Caches are torchtune's: ``setup_caches`` for one batch size and length, masks and positions from
``get_causal_mask_from_padding_mask`` and ``get_position_ids_from_padding_mask``.
"""

import importlib
from contextlib import contextmanager

import torch

from fuzzkv.backends.hf.paths import fed, padded, prefill_and_decode, reuse_primer

# The HF config values each torchtune builder argument comes from (every builder takes these) ...
COMMON_SETTINGS = {"vocab_size": "vocab_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
                   "num_kv_heads": "num_key_value_heads", "embed_dim": "hidden_size",
                   "intermediate_dim": "intermediate_size", "max_seq_len": "max_position_embeddings",
                   "norm_eps": "rms_norm_eps"}

# ... and per HF model_type: torchtune's builder and converter (module:function), the further builder
# arguments (torchtune name -> HF config name), the converter's arguments beyond the state dict, and the HF
# settings the builder cannot express, as (setting, the only value it models); "tied": the builder ties the
# output projection to the embedding (the checkpoint it loads has no lm_head, as HF saves a tied one). A config outside those
# values is not built at all: the model would differ from HF by construction, not by a bug.
FAMILIES: dict = {
    "llama": {"builder": "torchtune.models.llama3._component_builders:llama3",
              "converter": "torchtune.models.convert_weights:hf_to_tune", "settings": {},
              "converter_args": ("num_heads", "num_kv_heads", "dim", "head_dim"),
              "fixed": (("rope_scaling", None), ("attention_bias", False), ("mlp_bias", False),
                        ("hidden_act", "silu"))},
    "mistral": {"builder": "torchtune.models.mistral._component_builders:mistral",
                "converter": "torchtune.models.convert_weights:hf_to_tune", "settings": {},
                "converter_args": ("num_heads", "num_kv_heads", "dim", "head_dim"),
                "fixed": (("hidden_act", "silu"),)},
    "qwen2": {"builder": "torchtune.models.qwen2._component_builders:qwen2",
              "converter": "torchtune.models.qwen2._convert_weights:qwen2_hf_to_tune",
              "settings": {"tie_word_embeddings": "tie_word_embeddings"},
              "converter_args": ("num_heads", "num_kv_heads", "dim", "head_dim", "tie_word_embeddings"),
              "fixed": (("rope_scaling", None), ("use_sliding_window", False), ("hidden_act", "silu"))},
    "phi3": {"builder": "torchtune.models.phi3._component_builders:phi3",
             "converter": "torchtune.models.phi3._convert_weights:phi3_hf_to_tune", "settings": {},
             "converter_args": ("phi3_heads",),
             "fixed": (("rope_scaling", None), ("partial_rotary_factor", 1.0), ("hidden_act", "silu"))},
    "gemma": {"builder": "torchtune.models.gemma._component_builders:gemma",
              "converter": "torchtune.models.convert_weights:hf_to_tune", "settings": {"head_dim": "head_dim"},
              "converter_args": ("num_heads", "num_kv_heads", "dim", "head_dim"),
              "fixed": (("tie_word_embeddings", True),), "tied": True},
    "gemma2": {"builder": "torchtune.models.gemma2._component_builders:gemma2",
               "converter": "torchtune.models.gemma2._convert_weights:gemma2_hf_to_tune",
               "settings": {"head_dim": "head_dim", "hidden_capping_value": "attn_logit_softcapping",
                            "final_capping_value": "final_logit_softcapping", "sliding_window_size": "sliding_window",
                            "query_pre_attn_scalar": "query_pre_attn_scalar"},
               "converter_args": ("num_heads", "num_kv_heads", "dim", "head_dim"),
               "fixed": (("tie_word_embeddings", True),), "tied": True},
}

# Sliding windows torchtune's builder for the family leaves out, with where torchtune says so: its model attends
# to the whole sequence, so it computes the HF model's function only for sequences no longer than the window.
UNWINDOWED = {
    "mistral": "torchtune/models/mistral/_component_builders.py:56 (0.6.1): 'This does NOT currently include "
               "inference-time optimizations such as sliding-window attention'",
    "phi3": "torchtune/models/phi3/_model_builders.py:25 (0.6.1): 'This model does not currently support 128K "
            "context length nor optimizations such as sliding window attention'",
}


class CannotConvert(ValueError):
    """torchtune has no builder for this architecture, or its builder cannot express this configuration."""


def _function(path):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _rope_base(config):
    parameters = getattr(config, "rope_parameters", None) or {}  # transformers 5.x keeps rope_theta there
    return parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0))


def _rope_scaling(config):
    """The HF config's rope scaling type, None for plain RoPE (5.x writes {'rope_type': 'default'} for none)."""
    scaling = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None) or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    return None if kind in (None, "default") else kind


def _head_dim(config):
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def family_of(config):
    """The FAMILIES entry for an HF config; raises CannotConvert where torchtune cannot build the same model."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise CannotConvert(f"torchtune has no builder for {config.model_type} here (fuzzkv maps "
                            f"{', '.join(sorted(FAMILIES))})")
    for setting, modelled in family["fixed"]:
        value = _rope_scaling(config) if setting == "rope_scaling" else getattr(config, setting, modelled)
        if value != modelled:
            raise CannotConvert(f"torchtune's {config.model_type} builder has no {setting}={value!r} "
                                f"(it builds {setting}={modelled!r})")
    return family


def _converter_kwargs(config, names):
    values = {"num_heads": config.num_attention_heads, "num_kv_heads": config.num_key_value_heads,
              "dim": config.hidden_size, "head_dim": _head_dim(config),
              "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False))}
    if names == ("phi3_heads",):  # torchtune's checkpointer passes the head counts only for grouped queries
        grouped = config.num_attention_heads != config.num_key_value_heads
        return {key: values[key] if grouped else None for key in ("num_heads", "num_kv_heads", "dim")}
    return {name: values[name] for name in names}


def build_tune_model(hf_model):
    """The torchtune model of ``hf_model``: torchtune's builder for its family, its weights through torchtune's
    converter, in the HF model's dtype and on its device. Raises CannotConvert where torchtune cannot build it."""
    config = hf_model.config
    family = family_of(config)
    arguments = {name: getattr(config, key) for name, key in COMMON_SETTINGS.items()}
    arguments.update({name: getattr(config, key) for name, key in family["settings"].items()})
    arguments["rope_base"] = _rope_base(config)
    if "sliding_window_size" in arguments and arguments["sliding_window_size"] is None:
        arguments.pop("sliding_window_size")
    parameter = next(hf_model.parameters())
    with torch.device(parameter.device):
        tune_model = _function(family["builder"])(**arguments)
    state = {key: value.detach() for key, value in hf_model.state_dict().items()}
    if family.get("tied"):
        state.pop("lm_head.weight", None)  # HF saves no tied head: the checkpoint torchtune converts has none
    elif "lm_head.weight" not in state:  # an untied builder of a tied model: its output is the embedding
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    converted = _function(family["converter"])(state, **_converter_kwargs(config, family["converter_args"]))
    tune_model.load_state_dict({key: value.float() for key, value in converted.items()}, strict=True)
    return tune_model.to(parameter.dtype).eval()


def faithful_length(config):
    """The longest sequence the torchtune model computes the HF model's function on: the sliding window its
    builder leaves out (see UNWINDOWED), else None (any length)."""
    window = getattr(config, "sliding_window", None)
    if config.model_type in UNWINDOWED and isinstance(window, int) and window > 0:
        return window
    return None


def masks_and_positions(full_mask, cache_length=None):
    """torchtune's attention masks [B, T, cache_length or T] and positions [B, T] for a 2-D padding mask."""
    from torchtune.generation import get_causal_mask_from_padding_mask, get_position_ids_from_padding_mask

    padding = full_mask.bool()
    return (get_causal_mask_from_padding_mask(padding, target_seq_len=cache_length),
            get_position_ids_from_padding_mask(padding))


class TuneStep:
    """One cached forward of a torchtune model over ``tokens[:, start:start+size]`` (caches already set up)."""

    def __init__(self, model, full_mask):
        self.model = model
        self.masks, self.positions = masks_and_positions(full_mask, full_mask.shape[1])

    def __call__(self, tokens, start, size):
        end = start + size
        return self.model(tokens[:, start:end], mask=self.masks[:, start:end], input_pos=self.positions[:, start:end])


@contextmanager
def caches(model, batch_size, length):
    """Caches for ``batch_size`` rows of ``length`` positions, in the model's dtype, replacing any it had; deleted
    on leaving, so each case sets up its own (and the uncached reference runs without)."""
    parameter = next(model.parameters())
    teardown(model)
    with torch.device(parameter.device):
        model.setup_caches(batch_size=batch_size, dtype=parameter.dtype, decoder_max_seq_len=length)
    try:
        yield
    finally:
        teardown(model)


def teardown(model):
    from torchtune.modules.common_utils import delete_kv_caches

    if model.caches_are_setup():
        delete_kv_caches(model)


@torch.inference_mode()
def cached(model, case, pad_id, device, kind=None, chunks=None, forced=None, cache=None):
    """The cached path on caches set up for this case's batch and length (``kind`` and ``cache``: accepted for
    the HF signature; torchtune has one cache): prefill in the case's chunks, then decode greedily, or feeding
    the case's continuation, or ``forced``. Returns (tokens [B, T], mask [B, T], logits [B, T-1, V])."""
    ids, mask = padded(case, pad_id, device)
    with caches(model, ids.shape[0], mask.shape[1]):
        return _decode(model, case, ids, mask, chunks, fed(case, ids, forced))


def _decode(model, case, ids, mask, chunks, forced):
    tokens, logits = prefill_and_decode(ids, mask, chunks or case["prefill_chunks"], forced, TuneStep(model, mask))
    return tokens, mask, logits


@torch.inference_mode()
def reused(model, case, pad_id, device, forced):
    """The cached path on caches set up for ``case["reuse_batch"]`` rows, used for them, then ``reset_caches()``:
    the evaluation loop whose last batch is smaller than the one its caches were set up for."""
    primer = reuse_primer(case)
    primer_ids, primer_mask = padded(primer, pad_id, device)
    with caches(model, len(primer["prompts"]), primer_mask.shape[1]):
        _decode(model, primer, primer_ids, primer_mask, None, None)
        model.reset_caches()  # the contract under test: reset caches behave like fresh ones
        ids, mask = padded(case, pad_id, device)
        return _decode(model, case, ids, mask, None, fed(case, ids, forced))


@torch.inference_mode()
def reference(model, tokens, mask):
    """Uncached logits from ONE teacher-forced forward over ``tokens`` (no caches set up): [B, T-1, V]."""
    teardown(model)
    masks, positions = masks_and_positions(mask[:, :-1])
    return model(tokens[:, :-1], mask=masks, input_pos=positions)


def unused_id(prompts, vocab_size):
    """A token id no prompt holds: torchtune's generate() takes every token equal to its pad_id for padding."""
    used = {token for prompt in prompts for token in prompt}
    return next(i for i in range(vocab_size) if i not in used)


@torch.inference_mode()
def generate(model, case, pad_id, device, cache_implementation=None):
    """torchtune's own ``generate``, greedy (top_k=1), on caches set up for the batch as its recipe does, with each
    step's logits. Padding uses an id no prompt holds. Returns (sequences, mask, step logits)."""
    from torchtune.generation import generate as tune_generate

    pad = unused_id(case["prompts"], model.tok_embeddings.num_embeddings)
    ids, mask = padded(case, pad, device)
    with caches(model, ids.shape[0], mask.shape[1]):
        sequences, logits = tune_generate(model, ids, max_generated_tokens=case["max_new_tokens"], pad_id=pad,
                                          top_k=1)
    return sequences, mask, list(logits.unbind(1))
