"""How fuzzkv drives TransformerLens 4.x (``TransformerBridge``): adapters over the HF path code.

Like :mod:`fuzzkv.backends.hf.paths`, this module is standalone (torch, transformers and
transformer_lens only; no ``from __future__``): the TL backend runs it, and TransformerLens
reproduction scripts embed its source after ``hf_paths``'s, so the script's cached path is
the one fuzzkv ran: ``hf_paths.cached`` driving the bridge through :class:`BridgeAsModel`.
(Imports from ``fuzzkv.backends`` are dropped when embedded: that source precedes this one.)
"""

import copy
import types

import torch

from fuzzkv.backends.hf.paths import SilentlyUncached, cache_keyword


def build_bridge(hf_model, architecture):
    """A TransformerBridge over a deep copy of ``hf_model`` (the bridge rewires its modules in place)."""
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    return build_bridge_from_module(copy.deepcopy(hf_model), architecture, hf_config=hf_model.config).eval()


class BridgeAsModel:
    """Lets the HF path code drive a TransformerBridge: same call, same output fields.

    A cached call checks that the cache grew by the tokens fed: TransformerLens silently
    accepts arguments that make it skip the cache, and that must be a finding, not a pass.
    """

    def __init__(self, bridge, hf_config):
        self.bridge, self.config = bridge, hf_config  # the HF config: the path code builds caches from it
        self.keyword = cache_keyword(bridge)

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, use_cache=True):
        if not use_cache:
            logits = self.bridge(input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
            return types.SimpleNamespace(logits=logits, cache=None)
        before = 0 if cache is None else int(cache.get_seq_length())
        given = {"use_cache": True} if cache is None else {self.keyword: cache}
        logits, returned = self.bridge(input_ids, return_type="logits_and_cache", attention_mask=attention_mask,
                                       position_ids=position_ids, **given)
        size = input_ids.shape[1]
        if returned is None or (cache is not None and returned is not cache) or \
                int(returned.get_seq_length()) != before + size:
            raise SilentlyUncached(f"the cache did not grow from {before} to {before + size} tokens")
        return types.SimpleNamespace(logits=logits, cache=returned)

    __call__ = forward


@torch.inference_mode()
def bridge_generate(bridge, ids, prompt_mask, max_new_tokens):
    """TransformerLens's own ``generate``: greedy, with a cache, and the logits of every step."""
    out = bridge.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, stop_at_eos=False,
                          use_past_kv_cache=True, output_logits=True, verbose=False, attention_mask=prompt_mask)
    return out.sequences, list(out.logits)
