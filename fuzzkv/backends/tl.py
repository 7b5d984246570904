"""The TransformerLens backend: the same cases through TransformerLens's own cached code.

TransformerLens 4.x (``TransformerBridge``) re-implements attention, masking and the KV
cache update for most architectures, so it is an independent cached path worth fuzzing.
The bridge is built from a deep copy of the very HF model fuzzkv made or loaded (same
weights), offline and without a tokenizer. TransformerLens 2.x/3.x (``HookedTransformer``)
is detected and reported as not yet supported.
"""

from __future__ import annotations

import contextlib
import copy
import io
from importlib import metadata

from fuzzkv.backends import hf_loading  # noqa: F401  (offline mode before transformers loads)

import torch  # noqa: E402

from fuzzkv.backends import Backend, Trace, generation_trace, prefill_and_decode  # noqa: E402
from fuzzkv.backends.hf import HFBackend, positions_from_mask  # noqa: E402


class Unsupported(Exception):
    """TransformerLens cannot run this model or this version: reported once, not as a failure."""


class SilentlyUncached(RuntimeError):
    """A call that was given a cache did not extend it: the 'cached' path computed without one."""


def float64_copy(module):
    """A float64 deep copy of a TransformerLens model, for calibration (it prints on every dtype change)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return copy.deepcopy(module).to(torch.float64)


def tl_version() -> str | None:
    try:
        return metadata.version("transformer-lens")
    except metadata.PackageNotFoundError:
        return None


def api_description() -> str:
    version = tl_version()
    if version is None:
        return "TransformerLens is not installed"
    major = int(version.split(".")[0])
    api = "TransformerBridge" if major >= 4 else "HookedTransformer"
    return f"TransformerLens {version}, {api} API"


def build_bridge(hf_model):
    """A TransformerBridge over a deep copy of ``hf_model`` (the bridge rewires its modules in place).
    Returns (bridge, architecture name the adapter was chosen by)."""
    version = tl_version()
    if version is None:
        raise Unsupported("TransformerLens is not installed (pip install transformer-lens)")
    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES
    from transformer_lens.model_bridge.sources import build_bridge_from_module

    model = copy.deepcopy(hf_model)
    # config.architectures may be empty (from_config) or name a user's subclass: the nearest
    # supported class in the model's own hierarchy decides the adapter.
    names = [*(model.config.architectures or []), *(cls.__name__ for cls in type(model).__mro__)]
    arch = next((name for name in names if name in SUPPORTED_ARCHITECTURES), None)
    if arch is None:
        raise Unsupported(f"TransformerLens {version} does not support {type(model).__name__}")
    try:
        return build_bridge_from_module(model, arch, hf_config=model.config).eval(), arch
    except (ValueError, NotImplementedError, KeyError) as exc:
        raise Unsupported(f"TransformerLens {version} cannot build {arch}: {exc}") from None


def tl_backend(hf: HFBackend) -> Backend:
    """The TransformerLens backend for the installed version: TransformerBridge (4.x) or HookedTransformer (2.x/3.x)."""
    version = tl_version()
    if version is not None and int(version.split(".")[0]) < 4:
        from fuzzkv.backends.tl_legacy import LegacyTLBackend

        try:
            return LegacyTLBackend(hf, api_description())
        except (ValueError, NotImplementedError, KeyError, AttributeError, RuntimeError) as exc:
            # e.g. its config conversion cannot express this configuration (a size mismatch on loading)
            reason = str(exc).strip().splitlines()[-1][:300]
            raise Unsupported(f"TransformerLens {version} cannot build {type(hf.model).__name__}: {reason}") from None
    return TLBackend(hf)


class TLBackend(Backend):
    """Runs a TransformerBridge built from an HF backend's model."""

    name = "tl"
    caches = ("dynamic",)  # the bridge drives transformers' DynamicCache

    def __init__(self, hf: HFBackend):
        self.hf = hf
        self.bridge, self.architecture = build_bridge(hf.model)
        self.info = hf.info
        self.device, self.pad_id = hf.device, hf.pad_id
        self.api = api_description()
        self._bridge64 = None

    @torch.inference_mode()
    def cached(self, case, tokens=None, *, cache=None, chunks=None) -> Trace:
        batch = self.hf.pad_batch(case)
        positions = positions_from_mask(batch.full_mask)
        state = {"cache": None}

        def step(seq, start, size):
            return self._step(seq, batch.full_mask, positions, start, size, state)

        return prefill_and_decode(batch.ids, batch.full_mask, chunks or case.prefill_chunks, tokens, step)

    def _step(self, seq, mask, positions, start, size, state):
        end, cache = start + size, state["cache"]
        before = 0 if cache is None else int(cache.get_seq_length())
        kwargs = {"use_cache": True} if cache is None else {"past_key_values": cache}
        logits, returned = self.bridge(seq[:, start:end], return_type="logits_and_cache",
                                       attention_mask=mask[:, :end], position_ids=positions[:, start:end], **kwargs)
        # Guard: TransformerLens silently accepts arguments that make it skip the cache.
        if returned is None or (cache is not None and returned is not cache) or \
                int(returned.get_seq_length()) != before + size:
            raise SilentlyUncached(f"the cache did not grow from {before} to {before + size} tokens")
        state["cache"] = returned
        return logits

    def reused(self, case, tokens) -> Trace:
        raise NotImplementedError("cache reuse is an HF-backend oracle")

    @torch.inference_mode()
    def reference(self, tokens, attention_mask, *, float64=False):
        bridge = self._float64_bridge() if float64 else self.bridge
        inputs, mask = tokens[:, :-1].to(self.device), attention_mask[:, :-1].to(self.device)
        logits = bridge(inputs, attention_mask=mask, position_ids=positions_from_mask(mask), use_cache=False)
        return logits.double() if float64 else logits.float()

    def _float64_bridge(self):
        if self._bridge64 is None:
            self._bridge64 = float64_copy(self.bridge)
        return self._bridge64

    def release_float64(self) -> None:
        self._bridge64 = None

    @torch.inference_mode()
    def generate(self, case) -> Trace:
        """TransformerLens's own ``generate``: greedy, with the logits of every step."""
        batch = self.hf.pad_batch(case)
        n = case.max_new_tokens
        out = self.bridge.generate(batch.ids, max_new_tokens=n, do_sample=False, stop_at_eos=False,
                                   use_past_kv_cache=True, output_logits=True, verbose=False,
                                   attention_mask=batch.full_mask[:, :batch.prompt_length])
        return generation_trace(out.sequences, batch.full_mask, out.logits, batch.prompt_length)

    def reproduction(self, oracle, case, tolerance) -> str:
        from fuzzkv.backends.tl_repro import script

        return script(self, oracle, case, tolerance)
