"""Deliberately broken cache surfaces (``tests.broken_surfaces:NAME``): a cache operation or the paged path
breaks in one way, on the tiny Llama of :mod:`tests.broken_models`. The suite asserts fuzzkv's surface
oracles find each and shrink it."""

from __future__ import annotations

import functools
import types

import torch
from transformers.cache_utils import Cache
from transformers.utils import logging as hf_logging

from tests.broken_models import _build, _Tiny

PAGE = 4  # the paged bug shows past the first page of this many tokens


class _Surface(_Tiny):
    """Breaks the cache object it is given (once per cache), not the model's arithmetic."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if isinstance(cache, Cache) and not getattr(cache, "_broken", False):
            self.break_cache(cache)
            cache._broken = True
        else:
            position_ids = self.paged_positions(cache, position_ids)
        return LlamaForward(self, input_ids, attention_mask, position_ids, kwargs)

    def break_cache(self, cache):
        pass

    def paged_positions(self, cache, position_ids):
        return position_ids


def LlamaForward(model, input_ids, attention_mask, position_ids, kwargs):
    # The Llama forward itself: _Tiny.forward reads a cache length the paged cache does not offer.
    return super(_Tiny, model).forward(input_ids=input_ids, attention_mask=attention_mask,
                                       position_ids=position_ids, **kwargs)


def _all_but_last_layer(cache, operation):
    """Make ``cache.<operation>`` apply the layers' ``operation`` to every layer but the last."""

    original = getattr(cache, operation)

    @functools.wraps(original)  # the same signature: fuzzkv calls crop the way this transformers takes it
    def broken(*args):
        for layer in cache.layers[:-1]:
            getattr(layer, operation)(*args)

    setattr(cache, operation, broken)


class ReorderSkipsLastLayer(_Surface):
    """reorder_cache leaves the last layer as it was: beam search and reordered prefixes read stale rows."""

    def break_cache(self, cache):
        _all_but_last_layer(cache, "reorder_cache")


class CropForgetsLastLayer(_Surface):
    """crop shortens every layer but the last, which keeps the cropped tokens."""

    def break_cache(self, cache):
        _all_but_last_layer(cache, "crop")


class PagedPositionsPastFirstPage(_Surface):
    """Under continuous batching's paged cache, tokens past the first page get positions one too far (what a
    block table off by one page does to a token's place)."""

    def paged_positions(self, cache, position_ids):
        if type(cache).__name__ == "PagedAttentionCache" and position_ids is not None:
            return position_ids + (position_ids >= PAGE).long()
        return position_ids


class QuantizedScaleSpansBatch(_Surface):
    """A quantized cache that takes one scale over the whole batch (per tensor) while its settings promise groups
    inside each row: a row's keys and values are quantized differently beside other rows than alone."""

    def break_cache(self, cache):
        if type(cache).__name__ != "QuantizedCache":
            return
        for layer in cache.layers:
            if type(layer).__name__ == "Fp8QuantizedLayer":  # per tensor already, by design
                continue
            layer._quantize = types.MethodType(_per_tensor_quantize, layer)
            layer._dequantize = types.MethodType(_per_tensor_dequantize, layer)


def _per_tensor_quantize(layer, tensor, axis=None):
    scale = tensor.abs().amax().clamp(min=1e-12) / 7  # 4 bits, one scale over every row of the batch
    return (tensor / scale).round(), scale


def _per_tensor_dequantize(layer, quantized):
    values, scale = quantized
    return values * scale


class CompiledPositionsOffByOne(_Tiny):
    """Under torch.compile the positions are one too far (a branch on ``torch.compiler.is_compiling()`` that eager
    never takes, as compile-only code paths do): compiled decoding differs, eager is right."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if torch.compiler.is_compiling() and position_ids is not None:
            position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


class SdpaDropsPaddingMask(_Tiny):
    """Under the sdpa attention implementation the padding mask is dropped (an attention kernel that ignores its
    mask); eager is right."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if self.config._attn_implementation == "sdpa" and attention_mask is not None:
            attention_mask = torch.ones_like(attention_mask)
        return input_ids, attention_mask, position_ids


class IgnoresAttentionSwitch(SdpaDropsPaddingMask):
    """Drops the padding mask under sdpa, but cannot be switched to it after loading: like a model that does not
    follow transformers' AttentionInterface, its ``set_attn_implementation`` only logs transformers' warning and
    changes nothing. Built under eager."""

    def set_attn_implementation(self, attn_implementation, allow_all_kernels=False):
        if attn_implementation != self.config._attn_implementation:
            hf_logging.get_logger("transformers.modeling_utils").warning(
                f"{type(self).__name__} does not support setting its attention implementation dynamically, because "
                "it does not follow the functional approach based on AttentionInterface")


def clean():
    return _build(_Surface)


def ignores_attention_switch():
    model = _build(IgnoresAttentionSwitch)
    model.config._attn_implementation_internal = "eager"  # built under eager, as from_config(attn_implementation=)
    return model


def reorder_skips_last_layer():
    return _build(ReorderSkipsLastLayer)


def crop_forgets_last_layer():
    return _build(CropForgetsLastLayer)


def paged_positions_past_first_page():
    return _build(PagedPositionsPastFirstPage)


def sdpa_drops_padding_mask():
    return _build(SdpaDropsPaddingMask)


def quantized_scale_spans_batch():
    return _build(QuantizedScaleSpansBatch)


def compiled_positions_off_by_one():
    return _build(CompiledPositionsOffByOne)
