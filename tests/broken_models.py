"""Deliberately broken models, loaded through fuzzkv's factory form (``tests.broken_models:NAME``).

Each breaks the KV cache in one way that shows only for some shapes, like the real bugs
in background.md. The test suite asserts fuzzkv finds each and shrinks it to its minimal shape.
"""

from __future__ import annotations

import random
import weakref

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fuzzkv import registry
from fuzzkv.models.loading import sensitise

LONG_SEQUENCE = 10  # the cache breaks once it holds more than this many tokens


class _Tiny(LlamaForCausalLM):
    """A tiny Llama with fuzzkv's sensitive random init; subclasses break one thing."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        # The cache comes as ``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier).
        self.current_cache = kwargs.get("cache", kwargs.get("past_key_values"))
        past = 0 if self.current_cache is None else int(self.current_cache.get_seq_length())
        input_ids, attention_mask, position_ids = self.corrupt(past, input_ids, attention_mask, position_ids)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               **kwargs)

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        return input_ids, attention_mask, position_ids


class OffByOnePositions(_Tiny):
    """Decoding with a cache uses positions one too far (a RoPE off-by-one)."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if past > 0 and position_ids is not None:
            position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


class MaskDroppedWhenCached(_Tiny):
    """With a non-empty cache the padding mask is dropped: padded rows attend to padding."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if past > 0 and attention_mask is not None:
            attention_mask = torch.ones_like(attention_mask)
        return input_ids, attention_mask, position_ids


class BatchOfThree(_Tiny):
    """Only a batch of exactly three rows decodes wrongly (a cache sized for the wrong batch)."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if past > 0 and input_ids is not None and input_ids.shape[0] == 3 and position_ids is not None:
            position_ids = position_ids.flip(0)
        return input_ids, attention_mask, position_ids


class PastLongSequence(_Tiny):
    """Once the cache holds more than LONG_SEQUENCE tokens, new positions wrap around."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if past > LONG_SEQUENCE and position_ids is not None:
            position_ids = position_ids - LONG_SEQUENCE
        return input_ids, attention_mask, position_ids


class StaticCacheOffByOne(_Tiny):
    """Only with a static (preallocated) cache, decoding uses positions one too far."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if type(self.current_cache).__name__ == "StaticCache" and past > 0 and position_ids is not None:
            position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


class StaleAfterSmallerBatch(_Tiny):
    """A cache object that once served a bigger batch decodes the smaller one wrongly after reset()
    (the TorchTune bug class: caches set up for one batch size, reused for a smaller one)."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        cache, batch = self.current_cache, input_ids.shape[0] if input_ids is not None else 0
        seen = self.__dict__.setdefault("_largest_batch", weakref.WeakKeyDictionary())  # cache -> largest batch
        stale = cache is not None and seen.get(cache, batch) > batch
        if cache is not None:
            seen[cache] = max(seen.get(cache, 0), batch)
        if stale and past > 0 and position_ids is not None:
            position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


class StaleAfterReset(_Tiny):
    """A cache object that served one sequence decodes the next wrongly after reset(), whatever the batch (the
    class of transformers 4.57's DynamicCache.reset(); a static cache, reused for its own batch size, shows it)."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        cache = self.current_cache
        prefills = self.__dict__.setdefault("_prefills", weakref.WeakKeyDictionary())  # cache -> sequences started
        if cache is not None and past == 0:
            prefills[cache] = prefills.get(cache, 0) + 1
        if cache is not None and prefills.get(cache, 0) > 1 and past > 0 and position_ids is not None:
            position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


class LogitOffsetWhenCached(_Tiny):
    """Cached steps' logits move by LOGIT_OFFSET: about 5% of the tiny model's logit scale (~7)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if self.current_cache is not None and int(self.current_cache.get_seq_length()) > out.logits.shape[1]:
            out.logits = out.logits + LOGIT_OFFSET
        return out


LOGIT_OFFSET = 0.35


class SneakyLlama(LogitOffsetWhenCached):
    """The cached-logit offset in a class of its own name: ``save_pretrained`` writes ``architectures:
    ["SneakyLlama"]``, a class transformers does not define (loaded as the stock LlamaForCausalLM, it is clean)."""


def _build(cls):
    spec = registry.get("llama").config_for("tiny")
    config = LlamaConfig(**{k: v for k, v in spec.items() if k != "model_type"})
    torch.manual_seed(0)
    model = cls(config)
    sensitise(model, 0.2)
    return model.eval()


def clean():
    return _build(_Tiny)


def sneaky_llama():
    return _build(SneakyLlama)


def off_by_one_positions():
    return _build(OffByOnePositions)


def mask_dropped_when_cached():
    return _build(MaskDroppedWhenCached)


def batch_of_three():
    return _build(BatchOfThree)


def past_long_sequence():
    return _build(PastLongSequence)


def logit_offset_when_cached():
    return _build(LogitOffsetWhenCached)


def static_cache_off_by_one():
    return _build(StaticCacheOffByOne)


def stale_after_smaller_batch():
    return _build(StaleAfterSmallerBatch)


def stale_after_reset():
    return _build(StaleAfterReset)


# -- faults: models that misbehave in ways a long unattended run must survive ---------------

class WarmingUp(_Tiny):
    """Non-deterministic: decoding with a cache is wrong for the first WARM_UP cached calls of the
    process, then right. A failure seen early passes when re-run: fuzzkv must call it flaky."""

    calls = 0

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if past > 0 and position_ids is not None:
            WarmingUp.calls += 1
            if WarmingUp.calls <= WARM_UP:
                position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


WARM_UP = 56


class SometimesWrong(_Tiny):
    """Non-deterministic: a random SOMETIMES of the forward calls with keys in the cache use positions one too far
    (a race, say), drawn from a generator seeded per model so a run is repeatable."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        draws = self.__dict__.setdefault("_draws", random.Random(0))
        if past > 0 and position_ids is not None and draws.random() < SOMETIMES:
            position_ids = position_ids + 1
        return input_ids, attention_mask, position_ids


SOMETIMES = 0.3


class NanLogits(_Tiny):
    """Every forward returns NaN logits, on both paths: a comparison of NaN with NaN sees nothing."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = torch.full_like(out.logits, float("nan"))
        return out


class HangsWhenCached(_Tiny):
    """Decoding with a cache of batch 2 or more never returns (a deadlock, say)."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if past > 0 and input_ids is not None and input_ids.shape[0] >= 2:
            import time

            while True:
                time.sleep(0.05)
        return input_ids, attention_mask, position_ids


class OutOfMemoryOnBigBatches(_Tiny):
    """Runs out of memory on a batch of three or more rows (as a small GPU would)."""

    def corrupt(self, past, input_ids, attention_mask, position_ids):
        if input_ids is not None and input_ids.shape[0] >= 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return input_ids, attention_mask, position_ids


def warming_up():
    WarmingUp.calls = 0
    return _build(WarmingUp)


def sometimes_wrong():
    return _build(SometimesWrong)


def nan_logits():
    return _build(NanLogits)


def hangs_when_cached():
    return _build(HangsWhenCached)


def out_of_memory_on_big_batches():
    return _build(OutOfMemoryOnBigBatches)


def raises_when_built():
    raise RuntimeError("weights file is corrupt")


# -- a Bloom whose cached path gets a wrong position bias ---------------------------------------

def _alibi_flipped_when_cached(self, hidden_states, residual, alibi, attention_mask, layer_past=None, **kwargs):
    # Keys already in the cache: a decode step. Its ALiBi bias points the wrong way (the nearest key gets the largest
    # penalty), as a slice taken from the wrong end would. The prefill and the uncached path stay right.
    if layer_past is not None and int(layer_past.get_seq_length(self.layer_idx)) > 0:
        alibi = alibi.flip(-1)
    return type(self).__mro__[1].forward(self, hidden_states, residual, alibi, attention_mask, layer_past, **kwargs)


def alibi_flipped_when_cached():
    from fuzzkv.models.loading import build_random

    model = build_random(registry.get("bloom-560m").config_for("tiny"), seed=0, init_std=0.2, attn="eager").eval()
    for block in model.transformer.h:
        attention = block.self_attention
        # A class swap, not a patched method: the float64 twin calibration builds keeps the bug.
        attention.__class__ = type("AlibiFlipped" + type(attention).__name__, (type(attention),),
                                   {"forward": _alibi_flipped_when_cached})
    return model
