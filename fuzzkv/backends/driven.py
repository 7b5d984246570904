"""Backends whose model a path module drives: the HF path code (an HF model itself, or an adapter over
another library's model: TransformerLens), or a library's own path module with the same functions
(torchtune). Their cached path and uncached reference are that module's code, in the run's dtype or in
the higher precision that calibration and canaries compare against."""

from __future__ import annotations

import copy
from abc import abstractmethod
from types import ModuleType
from typing import Any

import torch

from fuzzkv.backends import mutants as canaries
from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.backends.interface import Backend, Encoder, Trace
from fuzzkv.case import Case

# The precision a run's dtype is checked against: rounding shrinks by orders of magnitude there,
# a cache bug does not.
PRECISE = {"float32": torch.float64, "bfloat16": torch.float32, "float16": torch.float32}


class DrivenBackend(Backend):
    """``model`` is what ``paths`` calls; a twin of it in the precise dtype serves calibration."""

    paths: ModuleType = hf_paths  # the path module: cached(model, case, pad_id, device, ...) and reference(...)
    model: Any
    pad_id: int
    device: str
    dtype: str
    _precise: Any = None

    def cached(self, case: Case, tokens: torch.Tensor | None = None, *, cache: str | None = None,
               chunks: tuple[int, ...] | None = None, precise: bool = False) -> Trace:
        data, encoder = case.to_dict(), self.encoder_of(case)
        model, store = self._cached_model(case, precise), None
        if encoder is not None and isinstance(model, canaries.Mutant):
            # A canary over an encoder-decoder model plants its bug in its decoder's calls: over the model's decoder
            # view, with the view's cache (the paths view and cache a bare model themselves).
            view = hf_paths.DecoderView(model.inner, encoder)
            model = model.over(view)
            store = hf_paths.new_cache(view, cache or case.cache, case.total_length, data.get("settings"),
                                       case.batch_size)
        sequence, mask, logits = self.paths.cached(model, data, self.pad_id, self.device, kind=cache, chunks=chunks,
                                                   forced=tokens, cache=store)
        return Trace.everywhere(sequence, mask, logits, encoder)

    def encoder_of(self, case: Case, repeat: int = 1) -> Encoder | None:
        """An encoder-decoder case's encoder inputs as the paths feed them (each row ``repeat`` times); None for a
        decoder-only case."""
        return hf_paths.encoder_inputs(case.to_dict(), self.pad_id, self.device, repeat)

    def _cached_model(self, case: Case, precise: bool) -> Any:
        """What the cached path drives for ``case``: the model, or its precise twin."""
        return self._precise_model() if precise else self.model

    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, precise: bool = False,
                  encoder: Encoder | None = None) -> torch.Tensor:
        model = self._precise_model() if precise else self.model
        if encoder is not None and isinstance(model, canaries.Mutant):
            model = model.over(hf_paths.DecoderView(model.inner, encoder))
        extra = {} if encoder is None else {"encoder": tuple(part.to(self.device) for part in encoder)}
        logits = self.paths.reference(model, tokens.to(self.device), attention_mask.to(self.device), **extra)
        return logits.double()

    def _precise_model(self, attn: str | None = None) -> Any:
        if self._precise is None:
            self._precise = {}
        if attn not in self._precise:
            self._precise[attn] = self._twin_of(self.model, PRECISE[self.dtype], attn)
        return self._precise[attn]

    def _twin_of(self, model: Any, dtype: torch.dtype, attn: str | None) -> Any:
        if isinstance(model, canaries.Mutant):  # a canary view: the same planted bug over the precise twin
            inner = self._view(model.inner).precise_twin(dtype, attn)
            return None if inner is None else model.over(inner)
        return self.precise_twin(dtype, attn)

    @abstractmethod
    def precise_twin(self, dtype: torch.dtype, attn: str | None = None) -> Any:
        """A copy of ``model`` in ``dtype`` (built once, on first use, and freed by ``release_precise``),
        with the attention implementation ``attn`` where given and possible (None where not possible)."""

    def release_precise(self) -> None:
        self._precise = None

    def precise_view(self, attn: str | None = None) -> Backend | None:
        twin = self._precise_model(attn)
        return None if twin is None else self._view(twin)

    def mutant(self, kind: str, logit_scale: float) -> Backend | None:
        if not canaries.applies(kind, self.model):
            return None
        return self._view(canaries.Mutant(self.model, kind, logit_scale))

    def _view(self, model: Any) -> DrivenBackend:
        """This backend driving ``model`` instead (shares everything else, the weights included)."""
        view = copy.copy(self)
        view.model, view._precise = model, None
        return view
