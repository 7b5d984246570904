"""Planted bugs in the parts of a model that only the generic reach exercises: a norm weight applied
wrongly under the cache, a recurrent (SSM) state updated wrongly under the cache, and an encoder-decoder's
cross-attention cache taken from another row's encoder output, and a vision-language model's image tokens one
position off on cached steps. Loaded through the factory form
(``tests.broken_architectures:NAME``); weights are fuzzkv's sensitive init."""

from __future__ import annotations

import contextlib
import functools

import torch
from transformers import (
    AutoConfig,
    BartForConditionalGeneration,
    Gemma2ForCausalLM,
    LlavaForConditionalGeneration,
    MambaForCausalLM,
    Qwen2VLForConditionalGeneration,
)

from fuzzkv import registry
from fuzzkv.backends.hf.paths import sensitise
from fuzzkv.models import shrink as hf_shrink
from fuzzkv.models import twins

STATE_DECAY = 0.9  # the planted bug decays a cached recurrent state once more per step


def _cache(kwargs):
    return kwargs.get("cache", kwargs.get("past_key_values"))


class NormWeightDroppedWhenCached(Gemma2ForCausalLM):
    """Cached decoding steps apply the final norm without its weight (Gemma's ``1 + w`` norm as if w = 0).
    transformers initialises those weights to zero, which hides the bug: only a sensitive init shows it."""

    def forward(self, *args, **kwargs):
        cache = _cache(kwargs)
        decoding = cache is not None and int(cache.get_seq_length()) > 0
        with _zeroed(self.model.norm.weight) if decoding else contextlib.nullcontext():
            return super().forward(*args, **kwargs)


@contextlib.contextmanager
def _zeroed(weight):
    saved = weight.detach().clone()
    with torch.no_grad():
        weight.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            weight.copy_(saved)


class StateDecayedWhenCached(MambaForCausalLM):
    """Each cached step multiplies the stored SSM state by STATE_DECAY before using it (a decay applied twice)."""

    def forward(self, *args, **kwargs):
        cache = _cache(kwargs)
        for layer in cache.layers if cache is not None else ():  # transformers 5.24: one state layer per block
            if layer.has_previous_state[0]:
                layer.recurrent_states[0] = layer.recurrent_states[0] * STATE_DECAY
        return super().forward(*args, **kwargs)


class CrossAttentionFromWrongRow(BartForConditionalGeneration):
    """On the first cached decoding step, each row's cross-attention keys and values are replaced by the next row's
    (as if recomputed from the wrong row of the encoder's output): invisible in a batch of one, or of rows whose
    encoder inputs are equal."""

    def forward(self, *args, **kwargs):
        cache = _cache(kwargs)
        if cache is not None and int(cache.get_seq_length()) > 0 and not getattr(cache, "planted", False):
            rows = cache.cross_attention_cache.layers[0].keys.shape[0]
            cache.cross_attention_cache.reorder_cache(torch.arange(rows).roll(1))
            cache.planted = True
        return super().forward(*args, **kwargs)


class ImagePositionOffWhenCached(LlavaForConditionalGeneration):
    """A call that extends a non-empty cache places its image tokens one position too far (an image's position
    counted from the cache's end once, and again from the prompt): an image in the first prefill chunk, or text
    alone, hides it."""

    def forward(self, *args, **kwargs):
        cache, ids, positions = _cache(kwargs), kwargs.get("input_ids"), kwargs.get("position_ids")
        if cache is not None and int(cache.get_seq_length()) > 0 and positions is not None and ids is not None:
            kwargs["position_ids"] = positions + (ids == self.config.image_token_id).long()
        return super().forward(*args, **kwargs)


class MRopeShiftDroppedAfterFirstStep(Qwen2VLForConditionalGeneration):
    """After a cached call of text alone (a decode step), the model forgets the M-RoPE shift its prefill kept (how
    far the images moved the text after them): from the next step on, text positions lose the images' extent. A
    prompt without an image (no shift), or a single decode step, hides it."""

    @functools.wraps(Qwen2VLForConditionalGeneration.forward)  # its signature: generate() checks keywords by it
    def forward(self, *args, **kwargs):
        cache, ids = _cache(kwargs), kwargs.get("input_ids")
        stepping = cache is not None and int(cache.get_seq_length()) > 0 and ids is not None and \
            not bool((ids == self.config.image_token_id).any())
        out = super().forward(*args, **kwargs)
        if stepping and self.model.rope_deltas is not None:
            self.model.rope_deltas = torch.zeros_like(self.model.rope_deltas)
        return out


def _built(cls, config: dict):
    config = dict(config)
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    torch.manual_seed(0)
    model = cls(cfg)
    sensitise(model, 0.2)
    return model.eval()


def norm_weight_dropped_when_cached():
    spec = registry.get("gemma-2-2b")
    return _built(NormWeightDroppedWhenCached, {"model_type": spec.model_type, **spec.config_for("tiny")})


def state_decayed_when_cached():
    return _built(StateDecayedWhenCached, hf_shrink.tiny_config("mamba"))


def cross_attention_from_wrong_row():
    return _built(CrossAttentionFromWrongRow, hf_shrink.tiny_config("bart"))


def image_position_off_when_cached():
    return _built(ImagePositionOffWhenCached, twins.tiny_config("llava"))


def mrope_shift_dropped_after_first_step():
    return _built(MRopeShiftDroppedAfterFirstStep, twins.tiny_config("qwen2_vl"))
