"""TransformerLens 2.x/3.x: the ``HookedTransformer`` API, where the Bloom cache bug lived.

The HookedTransformer is built offline from the very HF model fuzzkv made or loaded (see
:mod:`fuzzkv.backends.tl_legacy_paths`) and driven by the HF path code. Batches are unpadded:
this API infers padding from the pad token, so a generated token equal to it would be
masked, which is not a cache bug.
"""

from __future__ import annotations

import torch

from fuzzkv.backends import tl_legacy_paths
from fuzzkv.backends.driven import DrivenBackend
from fuzzkv.backends.hf import HFBackend
from fuzzkv.backends.interface import Capabilities, Trace
from fuzzkv.case import Case


class LegacyTLBackend(DrivenBackend):
    """Runs TransformerLens 2.x/3.x's HookedTransformer with its HookedTransformerKeyValueCache."""

    name = "tl"
    capabilities = Capabilities(caches=("dynamic",), max_batch=1)  # unpadded batches only

    def __init__(self, hf: HFBackend, api: str):
        self.hf, self.info, self.api = hf, hf.info, api
        self.device, self.pad_id = hf.device, hf.pad_id
        self.hooked = tl_legacy_paths.build_hooked_transformer(hf.model)
        self.model = tl_legacy_paths.HookedAsModel(self.hooked, hf.model.config)
        self.architecture = type(hf.model).__name__

    def float64_twin(self) -> tl_legacy_paths.HookedAsModel:
        from fuzzkv.backends.tl import float64_copy

        hooked = float64_copy(self.hooked)
        hooked.cfg.dtype = torch.float64
        return tl_legacy_paths.HookedAsModel(hooked, self.hf.model.config)

    def generate(self, case: Case) -> Trace:
        ids, mask = self.hf.padded(case)
        sequences, steps = tl_legacy_paths.hooked_generate(self.hooked, ids, case.max_new_tokens)
        return Trace.generated(sequences, mask, steps, case.padded_length)

    def module(self) -> torch.nn.Module:
        return self.hooked

    def reproduction(self, oracle: str, case: Case, tolerance: float) -> str:
        from fuzzkv.backends.repro import legacy_tl_script

        return legacy_tl_script(self, oracle, case, tolerance)
