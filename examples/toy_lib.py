"""A stand-in for a model library: one causal LM, built from a config, whose KV-cache path is its own code.

``ToyForCausalLM`` is a Llama with its own decoding step. Set ``TOYLIB_PLANT_CACHE_BUG=1`` to plant the kind of
bug fuzzkv exists for: once the cache holds tokens, the step computes positions one too far (a RoPE off-by-one),
so the cached logits drift from the uncached ones while every single forward pass still looks fine.
"""

from __future__ import annotations

import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM

PLANT_BUG = "TOYLIB_PLANT_CACHE_BUG"


class ToyForCausalLM(LlamaForCausalLM):
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        # The cache comes as ``cache`` (transformers >= 5.24) or ``past_key_values`` (earlier).
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        cached = cache is not None and int(cache.get_seq_length()) > 0
        if cached and position_ids is not None and os.environ.get(PLANT_BUG) == "1":
            position_ids = position_ids + 1
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                               **kwargs)


def tiny_toy() -> ToyForCausalLM:
    """The library's smallest model, with seeded random weights: what its tests build."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         attn_implementation="eager")
    return ToyForCausalLM(config).eval()
