"""Backends: the one interface through which oracles drive a model.

A backend owns a loaded model and knows how to run the paths an oracle compares:
the cached path (prefill in chunks, then greedy decode), the uncached teacher-forced
reference, cache reuse, and the library's own ``generate``. Every path returns a
:class:`Trace` so oracles never touch a library's API. One file per implementation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from fuzzkv.case import Case


@dataclass(frozen=True)
class ModelInfo:
    """What strategies and reports need to know about the model under test."""

    name: str
    architecture: str
    vocab_size: int
    special_ids: tuple[int, ...]
    max_positions: int | None
    sliding_windows: tuple[int, ...]
    source: str
    supports_static_cache: bool = True


@dataclass
class Trace:
    """What one path computed for a batch.

    tokens: the full sequence, prompt (padded) plus generated tokens, shape [B, T].
    attention_mask: 1 for real tokens, 0 for padding, shape [B, T].
    logits: logits predicting token t+1 at position t, shape [B, T-1, V], float32.
    checked: which positions this path computed logits for (and that are not padding),
        shape [B, T-1]; positions outside it are not compared.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    logits: torch.Tensor
    checked: torch.Tensor


class PathError(Exception):
    """A model path raised: carries which path and the original exception."""

    def __init__(self, path: str, error: BaseException):
        super().__init__(f"{path} path raised {type(error).__name__}: {error}")
        self.path = path
        self.error = error


class Backend(ABC):
    """A loaded model plus the paths that oracles compare."""

    name: str = "abstract"
    info: ModelInfo

    @abstractmethod
    def cached(self, case: Case, tokens: torch.Tensor | None = None, *, cache: str | None = None,
               chunks: tuple[int, ...] | None = None) -> Trace:
        """Prefill ``case`` in its chunks into a fresh cache, then decode.

        Greedy when ``tokens`` is None; otherwise feeds ``tokens`` (teacher forcing)
        so two paths can be compared position by position.
        """

    @abstractmethod
    def reused(self, case: Case, tokens: torch.Tensor) -> Trace:
        """Like :meth:`cached`, on a cache first used for ``case.reuse_batch`` rows, then reset."""

    @abstractmethod
    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, float64: bool = False) -> torch.Tensor:
        """Uncached logits from ONE teacher-forced forward pass: shape [B, T-1, V]."""

    @abstractmethod
    def generate(self, case: Case) -> Trace:
        """The library's own user-facing generation entry point, greedy, with logits."""

    def reproduction(self, oracle: str, case: Case, tolerance: float) -> str:
        """A standalone Python script reproducing ``oracle`` on ``case``."""
        return ""


def load_backend(config) -> Backend:
    """Build the backend named by ``config.backend`` (imported lazily: torch libraries are heavy)."""
    if config.backend == "hf":
        from fuzzkv.backends.hf import HFBackend

        return HFBackend.from_config(config)
    from fuzzkv.errors import UsageError

    raise UsageError(f"unknown backend {config.backend!r}.", tip="use --backend hf")
