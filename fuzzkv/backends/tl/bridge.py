"""The TransformerLens backend: the same cases through TransformerLens's own cached code.

TransformerLens 4.x (``TransformerBridge``) re-implements attention, masking and the KV
cache update for most architectures, so it is an independent cached path worth fuzzing.
The bridge is built from a deep copy of the very HF model fuzzkv made or loaded (same
weights), offline and without a tokenizer, and driven by the HF path code through
:class:`~fuzzkv.backends.tl.bridge_paths.BridgeAsModel`. TransformerLens 2.x/3.x
(``HookedTransformer``) lives in :mod:`fuzzkv.backends.tl.hooked`.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from typing import Any, cast

import torch  # noqa: E402

from fuzzkv.backends import precision  # noqa: E402
from fuzzkv.backends.driven import DrivenBackend  # noqa: E402
from fuzzkv.backends.hf import paths as hf_paths  # noqa: E402
from fuzzkv.backends.hf.backend import HFBackend  # noqa: E402
from fuzzkv.backends.interface import Backend, Capabilities, Trace, Unsupported  # noqa: E402
from fuzzkv.backends.tl import bridge_paths as tl_paths  # noqa: E402
from fuzzkv.backends.tl.scripts import tl_script
from fuzzkv.case import Case  # noqa: E402
from fuzzkv.errors import UsageError  # noqa: E402
from fuzzkv.features import PADDED_POSITIONS  # noqa: E402
from fuzzkv.verdict import Bounds  # noqa: E402

SilentlyUncached = hf_paths.SilentlyUncached


def tl_version() -> str | None:
    try:
        return metadata.version("transformer-lens")
    except metadata.PackageNotFoundError:
        return None


def require_installed() -> None:
    """TransformerLens is an extra (``fuzzkv[tl]``): a run that asks for it without it is bad usage, said in one line
    naming the install, before any model is built."""
    if tl_version() is None or importlib.util.find_spec("transformer_lens") is None:
        raise UsageError("--backend tl needs TransformerLens, which is not installed (an extra of fuzzkv's).",
                         tip="pip install 'fuzzkv[tl]'")


def api_description() -> str:
    version = tl_version()
    if version is None:
        return "TransformerLens is not installed"
    api = "TransformerBridge" if int(version.split(".")[0]) >= 4 else "HookedTransformer"
    return f"TransformerLens {version}, {api} API"


def bridge_architecture(hf_model: torch.nn.Module) -> str:
    """The architecture TransformerLens adapts ``hf_model`` as: config.architectures may be empty
    (from_config) or name a user's subclass, so the nearest supported class in its hierarchy decides."""
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    # torch types any Module attribute as Tensor | Module; this is the HF model's plain config object.
    names = [*(cast(Any, hf_model.config).architectures or []), *(cls.__name__ for cls in type(hf_model).__mro__)]
    arch = next((name for name in names if name in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise Unsupported(f"TransformerLens {tl_version()} does not support {type(hf_model).__name__}")
    return arch


def official_only(config: dict[str, Any]) -> str:
    """Why the installed TransformerLens builds ``config``'s architecture (a tiny config dict with model_type) only
    from its official configs ("" where it builds any: every TransformerBridge release)."""
    version = tl_version()
    if version is None or int(version.split(".")[0]) >= 4:
        return ""
    from fuzzkv.backends.tl.hooked import official_only as hooked_official_only

    return hooked_official_only(config, version)


def tl_backend(hf: HFBackend) -> Backend:
    """The TransformerLens backend for the installed version: TransformerBridge (4.x) or HookedTransformer (2.x/3.x)."""
    require_installed()
    version = cast(str, tl_version())
    if int(version.split(".")[0]) < 4:
        from fuzzkv.backends.tl.hooked import LegacyTLBackend

        try:
            return LegacyTLBackend(hf, api_description())
        except (ValueError, NotImplementedError, KeyError, IndexError, AttributeError, RuntimeError) as exc:
            # e.g. its config conversion cannot express this configuration (a size mismatch on loading)
            reason = str(exc).strip().splitlines()[-1][:300]
            raise Unsupported(f"TransformerLens {version} cannot build {type(hf.model).__name__}: {reason}") from None
    return TLBackend(hf)


class TLBackend(DrivenBackend):
    """Runs a TransformerBridge built from an HF backend's model."""

    name = "tl"
    # the bridge drives transformers' DynamicCache, and takes a padded row's positions from the mask
    capabilities = Capabilities(caches=("dynamic",), features=frozenset({PADDED_POSITIONS}))

    def __init__(self, hf: HFBackend):
        self.hf, self.info = hf, hf.info
        self.architecture = bridge_architecture(hf.model)
        try:
            self.bridge = tl_paths.build_bridge(hf.model, self.architecture)
        except (ValueError, NotImplementedError, KeyError) as exc:
            raise Unsupported(f"TransformerLens {tl_version()} cannot build {self.architecture}: {exc}") from None
        self.model = tl_paths.BridgeAsModel(self.bridge, hf.model.config)
        self.device, self.pad_id, self.dtype = hf.device, hf.pad_id, hf.dtype
        self.api = api_description()

    def precise_twin(self, dtype: torch.dtype, attn: str | None = None) -> tl_paths.BridgeAsModel | None:
        if attn is not None:
            return None  # the bridge's attention is TransformerLens's own
        return tl_paths.BridgeAsModel(precision.twin(self.bridge, dtype), self.hf.model.config)

    def _view(self, model: Any) -> DrivenBackend:
        view = super()._view(model)
        if isinstance(model, tl_paths.BridgeAsModel):  # the precise twin: its generate() runs precisely too
            view.bridge = model.bridge  # type: ignore[attr-defined]
        return view

    def generate(self, case: Case) -> Trace:
        ids, mask = self.hf.padded(case)
        sequences, steps = tl_paths.bridge_generate(self.bridge, ids, mask[:, :ids.shape[1]], case.max_new_tokens)
        return Trace.generated(sequences, mask, steps, case.padded_length)

    def module(self) -> torch.nn.Module:
        return self.bridge

    def reproduction(self, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
        return tl_script(self, oracle, body, case, bounds)
