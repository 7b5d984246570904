"""The torchtune backend: the same cases through torchtune's own model, caches and generation.

torchtune builds its own decoder for each architecture and caches keys and values in fixed-size
caches set up for one batch size (``setup_caches``), with explicit masks and positions. Its model is
built from the very HF model fuzzkv made or loaded: torchtune's component builder for the family and
torchtune's own weight converter (:mod:`fuzzkv.backends.tune.paths`), so a wrong conversion shows in
the ``cross`` oracle and nowhere else. The path code lives in :mod:`~fuzzkv.backends.tune.paths`,
which torchtune reproduction scripts embed.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import metadata
from typing import Any

import torch

from fuzzkv.backends import mutants as canaries
from fuzzkv.backends import precision
from fuzzkv.backends.driven import DrivenBackend
from fuzzkv.backends.hf.backend import HFBackend
from fuzzkv.backends.interface import Backend, Capabilities, Trace, Unsupported
from fuzzkv.backends.tune import paths as tt_paths
from fuzzkv.backends.tune.scripts import tune_script
from fuzzkv.case import Case
from fuzzkv.features import CACHE_RESET, PADDED_POSITIONS
from fuzzkv.verdict import Bounds

# The case's cache kind names HF's cache (the cross oracle's reference); torchtune has one kind, a fixed-size
# cache set up per batch, which every case uses. Padded rows take their positions from the padding mask.
CAPABILITIES = Capabilities(caches=("dynamic",), features=frozenset({PADDED_POSITIONS, CACHE_RESET}))


def torchtune_version() -> str | None:
    try:
        return metadata.version("torchtune")
    except metadata.PackageNotFoundError:
        return None


def tune_backend(hf: HFBackend) -> Backend:
    """The torchtune backend of ``hf``'s model; Unsupported where torchtune is absent or cannot build it."""
    version = torchtune_version()
    if version is None:
        raise Unsupported("torchtune is not installed (pip install 'fuzzkv[torchtune]')")
    try:
        return TorchtuneBackend(hf, f"torchtune {version}")
    except ImportError as exc:  # torchtune imports torchao, which it does not declare
        raise Unsupported(f"torchtune {version} does not import here ({exc}); "
                          "pip install 'fuzzkv[torchtune]' pins a torchao it works with") from None
    except tt_paths.CannotConvert as exc:
        raise Unsupported(f"torchtune {version} cannot build {type(hf.model).__name__}: {exc}") from None


class TorchtuneBackend(DrivenBackend):
    """Runs the torchtune model converted from an HF backend's model."""

    name = "torchtune"
    paths = tt_paths
    capabilities = CAPABILITIES

    def __init__(self, hf: HFBackend, api: str):
        self.hf, self.api = hf, api
        self.model = tt_paths.build_tune_model(hf.model)
        self.device, self.pad_id, self.dtype = hf.device, hf.pad_id, hf.dtype
        self.info = hf.info
        window = tt_paths.faithful_length(hf.model.config)
        if window is not None:
            # A builder that leaves the sliding window out attends to the whole sequence: torchtune's own oracles see
            # no window, and the cross oracle keeps to sequences the two compute the same function on.
            self.info = replace(hf.info, sliding_windows=())
            self.agrees_up_to = (window, f"torchtune's builder has no sliding window "
                                         f"({tt_paths.UNWINDOWED[hf.model.config.model_type]})")

    def precise_twin(self, dtype: torch.dtype, attn: str | None = None) -> Any:
        if attn is not None:
            return None  # torchtune's attention is its own
        return precision.twin(self.model, dtype)

    def mutant(self, kind: str, logit_scale: float) -> Backend | None:
        return self._view(TuneMutant(self.model, kind, logit_scale)) if kind in canaries.KINDS else None

    def reused(self, case: Case, tokens: torch.Tensor) -> Trace:
        return Trace.everywhere(*tt_paths.reused(self.model, case.to_dict(), self.pad_id, self.device, tokens))

    def generate(self, case: Case) -> Trace:
        sequences, mask, steps = tt_paths.generate(self.model, case.to_dict(), self.pad_id, self.device)
        return Trace.generated(sequences, mask, steps, case.padded_length)

    def module(self) -> torch.nn.Module:
        return self.model

    def texts(self, prompts: tuple[tuple[int, ...], ...]) -> list[str] | None:
        return self.hf.texts(prompts)

    def reproduction(self, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
        return tune_script(self, oracle, body, case, bounds)


class TuneMutant(torch.nn.Module):
    """The torchtune model with the canary ``kind`` (see :mod:`fuzzkv.backends.mutants`) planted in every call that
    reads a non-empty cache: what canaries plant in an HF model, through torchtune's mask and positions."""

    inner: Any  # the torchtune TransformerDecoder (a submodule: parameters, copies and dtype casts include it)

    def __init__(self, model: torch.nn.Module, kind: str, logit_scale: float):
        super().__init__()
        self.inner, self.kind, self.logit_scale = model, kind, logit_scale

    @property
    def tok_embeddings(self) -> Any:
        return self.inner.tok_embeddings

    def setup_caches(self, *args: Any, **kwargs: Any) -> None:
        self.inner.setup_caches(*args, **kwargs)

    def caches_are_setup(self) -> bool:
        return bool(self.inner.caches_are_setup())

    def caches_are_enabled(self) -> bool:
        return bool(self.inner.caches_are_enabled())

    def reset_caches(self) -> None:
        self.inner.reset_caches()

    def forward(self, tokens: torch.Tensor, *, mask: torch.Tensor | None = None,
                input_pos: torch.Tensor | None = None) -> torch.Tensor:
        start = self._cached_length()
        if start and mask is not None and input_pos is not None:
            mask, input_pos = self._corrupt(mask, input_pos, start)
        logits = self.inner(tokens, mask=mask, input_pos=input_pos)
        if start and self.kind == "logit-offset-5pct":
            logits = logits + canaries.OFFSET_FRACTION * self.logit_scale
        return logits

    def _cached_length(self) -> int:
        if not self.inner.caches_are_setup():
            return 0
        return int(self.inner.layers[0].attn.kv_cache.size)

    def _corrupt(self, mask: torch.Tensor, positions: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "positions-off-by-one":
            return mask, positions + 1
        mask = mask.clone()
        if self.kind == "cached-key-dropped":
            mask[..., 0] = False
        elif self.kind == "row-mask-ignored":  # every slot up to the query's own: padding attended to
            slots = torch.arange(mask.shape[-1], device=mask.device)
            queries = start + torch.arange(mask.shape[1], device=mask.device)
            mask[:] = slots[None, None, :] <= queries[None, :, None]
        return mask, positions
