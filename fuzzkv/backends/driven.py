"""Backends whose model the HF path code drives: the model itself, or an adapter over another
library's model (TransformerLens). Their cached path and uncached reference are the same code."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from fuzzkv.backends import hf_paths
from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case


class DrivenBackend(Backend):
    """``model`` is what ``hf_paths`` calls; a float64 twin of it serves calibration."""

    model: Any
    pad_id: int
    device: str
    _model64: Any = None

    def cached(self, case: Case, tokens: torch.Tensor | None = None, *, cache: str | None = None,
               chunks: tuple[int, ...] | None = None) -> Trace:
        return Trace.everywhere(*hf_paths.cached(self.model, case.to_dict(), self.pad_id, self.device, kind=cache,
                                                 chunks=chunks, forced=tokens))

    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, float64: bool = False) -> torch.Tensor:
        model = self._float64_model() if float64 else self.model
        logits = hf_paths.reference(model, tokens.to(self.device), attention_mask.to(self.device))
        return logits.double() if float64 else logits.float()

    def _float64_model(self) -> Any:
        if self._model64 is None:
            self._model64 = self.float64_twin()
        return self._model64

    @abstractmethod
    def float64_twin(self) -> Any:
        """A float64 copy of ``model`` (built once, on first use, and freed by ``release_float64``)."""

    def release_float64(self) -> None:
        self._model64 = None
