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


def prefill_and_decode(ids: torch.Tensor, full_mask: torch.Tensor, chunks, forced: torch.Tensor | None,
                       step) -> Trace:
    """The cached path every backend shares: prefill ``ids`` in ``chunks``, then decode.

    ``step(tokens, start, size)`` runs the model on ``tokens[:, start:start+size]`` with
    its cache and returns those positions' logits. Greedy unless ``forced`` gives the
    full sequence to feed (teacher forcing, so two paths compare position by position).
    """
    prompt_length, total = ids.shape[1], full_mask.shape[1]
    tokens = torch.cat([ids, torch.zeros_like(full_mask[:, prompt_length:])], dim=1)
    if forced is not None:
        tokens = forced.to(ids.device).clone()
    step_logits, start = [], 0
    for size in chunks:
        step_logits.append(step(tokens, start, size))
        start += size
    for pos in range(prompt_length, total):
        if forced is None:
            tokens[:, pos] = step_logits[-1][:, -1].argmax(-1)
        if pos < total - 1:
            step_logits.append(step(tokens, pos, 1))
    return Trace(tokens, full_mask, torch.cat(step_logits, dim=1).float(), full_mask[:, :-1].bool())


def generation_trace(sequences: torch.Tensor, full_mask: torch.Tensor, step_logits, prompt_length: int) -> Trace:
    """A Trace for a library's generate(): logits exist only at the positions it generated from."""
    batch, total = full_mask.shape
    logits = torch.full((batch, total - 1, step_logits[0].shape[-1]), float("nan"), device=full_mask.device)
    checked = torch.zeros((batch, total - 1), dtype=torch.bool, device=full_mask.device)
    for i, step in enumerate(step_logits):
        logits[:, prompt_length - 1 + i] = step.float()
        checked[:, prompt_length - 1 + i] = True
    return Trace(sequences, full_mask, logits, checked)


class CrossBackend:
    """Two implementations of the same model (same weights), for the ``cross`` oracle."""

    name = "cross"

    def __init__(self, hf: Backend, tl: Backend):
        self.hf, self.tl, self.info = hf, tl, hf.info

    def reproduction(self, oracle: str, case: Case, tolerance: float) -> str:
        return self.tl.reproduction(oracle, case, tolerance)


@dataclass
class Lanes:
    """The backends a run drives, by lane name ("hf", "tl", "cross"), and why any is missing."""

    backends: dict
    unsupported: dict  # lane name -> one-line reason
    hf: Backend  # the HF model every lane is built from (also when only TransformerLens lanes run)

    @property
    def primary(self):
        return self.backends.get("hf") or self.backends.get("tl") or self.hf


def load_lanes(config) -> Lanes:
    """Build the backends ``config.backend`` asks for ("hf", "tl" or "both"); heavy imports happen here."""
    from fuzzkv.backends.hf import HFBackend
    from fuzzkv.config import fits
    from fuzzkv.errors import UsageError

    if config.backend not in ("hf", "tl", "both"):
        raise UsageError(f"unknown backend {config.backend!r}.", tip="use --backend hf, tl or both")
    hf = HFBackend.from_config(config)
    fits(config, hf.info.max_positions, hf.info.name)  # before any store is opened
    lanes = Lanes({} if config.backend == "tl" else {"hf": hf}, {}, hf)
    if config.backend == "hf":
        return lanes
    from fuzzkv.backends.tl import Unsupported, tl_backend

    try:
        tl = tl_backend(hf)
    except Unsupported as exc:
        lanes.unsupported["tl"] = str(exc)
        return lanes
    lanes.backends["tl"] = tl
    if config.backend == "both":
        lanes.backends["cross"] = CrossBackend(hf, tl)
    return lanes
