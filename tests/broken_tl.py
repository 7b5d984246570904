"""A TransformerLens-side bug planted at import, for subprocess tests only (never import in-process).

Importing this module changes TransformerLens's Bloom attention for the whole process: with a
cache in use, the ALiBi bias is sliced one row off (the Bloom bug class). HF stays correct, so
the factory's model is fine under --backend hf and broken under --backend tl.
"""

import torch
from transformer_lens.model_bridge.generalized_components.bloom_attention import BloomAttentionBridge

from fuzzkv import registry
from fuzzkv.backends.hf_loading import build_random

_original = BloomAttentionBridge._reconstruct_attention


def _alibi_off_by_one_row_when_cached(self, q, k, v, **kwargs):
    alibi = kwargs.get("alibi")
    if alibi is not None and alibi.shape[-1] > q.shape[1]:
        kwargs["alibi"] = torch.cat([alibi[..., 1:], alibi[..., -1:]], dim=-1)
    return _original(self, q, k, v, **kwargs)


BloomAttentionBridge._reconstruct_attention = _alibi_off_by_one_row_when_cached


def make():
    return build_random(registry.get("bloom-560m").config_for("tiny"), seed=0, init_std=0.2, attn="eager").eval()
