"""TransformerLens 2.x/3.x: the ``HookedTransformer`` API, where the Bloom cache bug lived.

The HookedTransformer is built offline from the very HF model fuzzkv made or loaded (see
:mod:`fuzzkv.backends.tl.hooked_paths`) and driven by the HF path code. Padded batches pass
their attention mask explicitly, with and without a cache. Its generate() infers padding from
the pad token (a generated token equal to it would be masked, which is not a cache bug), so it
runs each row of a padded case alone.
"""

from __future__ import annotations

from typing import Any

import torch

from fuzzkv.backends import mutants as canaries
from fuzzkv.backends import precision
from fuzzkv.backends.driven import DrivenBackend
from fuzzkv.backends.hf.backend import HFBackend
from fuzzkv.backends.interface import Capabilities, Refused, Trace
from fuzzkv.backends.tl import hooked_paths as tl_legacy_paths
from fuzzkv.backends.tl.scripts import legacy_tl_script
from fuzzkv.case import EXPLICIT_PADDING, INFERRED_PADDING, PADDING_MODE, Case
from fuzzkv.features import PADDED_POSITIONS
from fuzzkv.verdict import Bounds


class LegacyTLBackend(DrivenBackend):
    """Runs TransformerLens 2.x/3.x's HookedTransformer with its key/value cache."""

    name = "tl"
    # Padded batches pass their mask explicitly (generate() runs each row alone: see tl_legacy_paths); positions
    # come from the mask, so a left-padded row equals the row alone.
    capabilities = Capabilities(caches=("dynamic",), features=frozenset({PADDED_POSITIONS}),
                                padding_modes=(EXPLICIT_PADDING, INFERRED_PADDING))

    def __init__(self, hf: HFBackend, api: str):
        self.hf, self.info, self.api = hf, hf.info, api
        self.device, self.pad_id, self.dtype = hf.device, hf.pad_id, hf.dtype
        self.hooked = tl_legacy_paths.build_hooked_transformer(hf.model)
        self.model = tl_legacy_paths.HookedAsModel(self.hooked, hf.model.config)
        self.architecture = type(hf.model).__name__

    def precise_twin(self, dtype: torch.dtype, attn: str | None = None) -> tl_legacy_paths.HookedAsModel | None:
        if attn is not None:
            return None  # TransformerLens's own attention
        hooked = precision.cast_copy(self.hooked, dtype)
        hooked.cfg.dtype = dtype
        return tl_legacy_paths.HookedAsModel(hooked, self.hf.model.config)

    def _view(self, model: Any) -> DrivenBackend:
        view = super()._view(model)
        if isinstance(model, tl_legacy_paths.HookedAsModel):  # the precise twin: its generate() runs precisely too
            view.hooked = model.hooked  # type: ignore[attr-defined]
        return view

    def cached(self, case: Case, tokens: torch.Tensor | None = None, *, cache: str | None = None,
               chunks: tuple[int, ...] | None = None, precise: bool = False) -> Trace:
        try:
            return super().cached(case, tokens, cache=cache, chunks=chunks, precise=precise)
        except tl_legacy_paths.ReadAsPadding as exc:  # not applicable in this padding mode, not a finding
            raise Refused(str(exc)) from exc

    def _cached_model(self, case: Case, precise: bool) -> Any:
        """A case drawn with ``padding_mode`` "inferred" lets TransformerLens infer each cached call's mask from the
        pad token."""
        model = super()._cached_model(case, precise)
        return _inferring(model, self.pad_id) if _infers_padding(case) else model

    def generate(self, case: Case) -> Trace:
        """TransformerLens's generate: on the padded batch whole where the case lets TransformerLens infer padding
        from the pad token (as it does for a list of prompts), else on each row alone (it takes no mask)."""
        ids, mask = self.hf.padded(case)
        generate = tl_legacy_paths.hooked_generate_batch if _infers_padding(case) else \
            tl_legacy_paths.hooked_generate_rows
        try:
            sequences, steps = generate(self.hooked, ids, mask, case.max_new_tokens, self.pad_id)
        except tl_legacy_paths.ReadAsPadding as exc:  # not applicable in this padding mode, not a finding
            raise Refused(str(exc)) from exc
        return Trace.generated(sequences, mask, steps, case.padded_length)

    def module(self) -> torch.nn.Module:
        return self.hooked

    def reproduction(self, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
        return legacy_tl_script(self, oracle, body, case, bounds)


def _infers_padding(case: Case) -> bool:
    """Whether ``case`` was drawn to let TransformerLens infer padding from the pad token (see padding_modes)."""
    return case.setting(PADDING_MODE) == INFERRED_PADDING


def _inferring(model: Any, pad_id: int) -> Any:
    """``model`` (an adapter, or a canary over one) letting TransformerLens infer padding from ``pad_id``."""
    if isinstance(model, canaries.Mutant):
        return model.over(_inferring(model.inner, pad_id))
    return tl_legacy_paths.HookedAsModel(model.hooked, model.config, infer_pad_id=pad_id)


def official_only(config: dict[str, Any], version: str) -> str:
    """Why TransformerLens ``version`` builds ``config``'s architecture (a tiny config dict with model_type) only
    from its official configs, each at its released sizes; "" where it converts this config itself, or has no
    official config of the architecture either."""
    import tempfile

    import transformers

    hf_config = transformers.AutoConfig.for_model(**config)
    with tempfile.TemporaryDirectory() as directory:
        cfg = tl_legacy_paths.converted_from_config(hf_config, directory)
    if cfg is not None and tl_legacy_paths.same_sizes(cfg.to_dict(), hf_config):
        return ""
    every_size = tuple(tl_key for tl_key, _ in tl_legacy_paths.SIZES)
    try:
        tl_legacy_paths.official_name_of_same_size(hf_config, ignoring=every_size)
    except NotImplementedError:
        return ""
    architecture = (hf_config.architectures or [config["model_type"]])[0]
    return f"TransformerLens {version} builds {architecture} only from its official configs"
