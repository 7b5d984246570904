"""A TransformerLens-side bug planted at import, for subprocess tests only (never import in-process).

Importing this module changes TransformerLens's attention for the whole process, on the TransformerLens side
only, so the factory's model is fine under --backend hf and broken under --backend tl:
- TransformerLens 4.x (``TransformerBridge``): with a cache in use, Bloom's ALiBi bias is sliced one row off
  (the Bloom bug class);
- TransformerLens 2.x/3.x (``HookedTransformer``): a call that attends to cached keys scales its attention
  scores by 1.25 (the Gemma-2 attention-scale bug class, on the cached path only).
"""

from importlib import metadata

import torch

from fuzzkv import registry
from fuzzkv.models.loading import build_random

CACHED_SCALE_ERROR = 1.25

if int(metadata.version("transformer-lens").split(".")[0]) >= 4:
    from transformer_lens.model_bridge.generalized_components.bloom_attention import BloomAttentionBridge

    _original = BloomAttentionBridge._reconstruct_attention

    def _alibi_off_by_one_row_when_cached(self, q, k, v, **kwargs):
        alibi = kwargs.get("alibi")
        if alibi is not None and alibi.shape[-1] > q.shape[1]:
            kwargs["alibi"] = torch.cat([alibi[..., 1:], alibi[..., -1:]], dim=-1)
        return _original(self, q, k, v, **kwargs)

    BloomAttentionBridge._reconstruct_attention = _alibi_off_by_one_row_when_cached
else:
    from transformer_lens.components.abstract_attention import AbstractAttention

    _original_scores = AbstractAttention.calculate_attention_scores

    def _scale_wrong_when_cached(self, q, k):
        scores = _original_scores(self, q, k)  # q, k: [batch, pos, head_index, d_head]
        return scores * CACHED_SCALE_ERROR if k.shape[1] > q.shape[1] else scores

    AbstractAttention.calculate_attention_scores = _scale_wrong_when_cached


def make():
    return build_random(registry.get("bloom-560m").config_for("tiny"), seed=0, init_std=0.2, attn="eager").eval()
