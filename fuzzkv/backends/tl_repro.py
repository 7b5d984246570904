"""Standalone reproduction scripts for TransformerLens-backend failures.

The script rebuilds the HF model exactly as fuzzkv did, builds the TransformerLens bridge
from a deep copy of it (same weights), and drives the bridge through the same path code as
the HF scripts, so the two are compared line for line.
"""

from __future__ import annotations

from fuzzkv.backends import hf_repro

BRIDGE = '''
import copy
import types
from transformer_lens.model_bridge.sources import build_bridge_from_module

hf_model = model
bridge = build_bridge_from_module(copy.deepcopy(hf_model), {arch!r}, hf_config=hf_model.config).eval()


class BridgeAsModel:
    """Lets the path code above drive TransformerLens's bridge instead of the HF model."""

    config = hf_model.config

    def __call__(self, input_ids, **kwargs):
        return types.SimpleNamespace(logits=bridge(input_ids, **kwargs))
'''

CROSS = '''
tokens, mask, hf_cached = cached(CASE, "dynamic", CASE["prefill_chunks"])
hf_uncached = reference(tokens, mask)
model = BridgeAsModel()
_, _, tl_cached = cached(CASE, "dynamic", CASE["prefill_chunks"], forced=tokens)
tl_uncached = reference(tokens, mask)
checked = mask[:, :-1].bool()
print("uncached, TransformerLens vs HF:", end=" ")
report(hf_uncached, tl_uncached, checked)
print("cached, TransformerLens vs HF:", end=" ")
report(hf_cached, tl_cached, checked)
'''


def script(tl_backend, oracle: str, case, tolerance: float) -> str:
    """A script reproducing ``oracle`` on ``case`` through TransformerLens (and HF for ``cross``)."""
    bridge = BRIDGE.format(arch=tl_backend.architecture)
    if oracle == "cross":
        body = bridge + CROSS
    else:
        # tl-decode's forward-with-cache comparison is the decode oracle run on the bridge.
        paths = hf_repro.ORACLE_BODIES["decode" if oracle == "tl-decode" else oracle]
        body = bridge + "\nmodel = BridgeAsModel()\n" + paths
    return hf_repro.script(tl_backend.hf, oracle, case, tolerance, body=body,
                           library=f"transformers + {tl_backend.api}")
