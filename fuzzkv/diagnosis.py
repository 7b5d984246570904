"""Where it breaks: the first layer, and the part of it, at which two paths part.

A failing case says *that* cached and uncached logits differ; a fix needs *where*. This
module re-runs a minimal case on both paths with PyTorch forward hooks on every decoder
layer and its attention and MLP blocks, and (where the backend can show its cache) it
compares the keys and values the cache holds with those one uncached pass computes.
The first (layer, part) whose difference is far above rounding is where the bug lives:
keys/values that differ point at what is written to the cache (positions, rotary
embeddings); keys/values that agree with an attention output that differs point at how
the cache is read (mask, ALiBi bias, scale, window).

It uses only torch and the module tree, so it works for any backend whose model is a
``torch.nn.Module``: transformers, TransformerLens, or a user's factory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import torch

from fuzzkv.backends.interface import Backend, Trace, uncached
from fuzzkv.case import Case

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Lane
    from fuzzkv.verdict import Verdict

PARTS = ("keys", "values", "attention", "mlp", "output")
PART_NAMES = {"keys": "cached keys", "values": "cached values", "attention": "attention output",
              "mlp": "MLP output", "output": "layer output"}
ATTENTION_NAMES = ("self_attn", "attn", "self_attention", "attention")
MLP_NAMES = ("mlp", "feed_forward", "ffn")
# Float32 rounding leaves relative differences near 1e-6 between two correct paths; a
# cache bug moves a hidden state by percent. The threshold sits between, scaled to the
# failure's own logit tolerance where that is looser (lower precision dtypes).
MIN_RELATIVE_THRESHOLD = 1e-4


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's stack of decoder layers: its longest ModuleList (first one when tied)."""
    best: list = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            best = list(module)
    return best


def layer_parts(layer: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """A layer's attention and MLP blocks, found by name (every library names them alike), and the layer."""
    children = dict(layer.named_children())
    parts = {"output": layer}
    for part, names in (("attention", ATTENTION_NAMES), ("mlp", MLP_NAMES)):
        found = next((children[n] for n in names if n in children), None)
        if found is not None:
            parts[part] = found
    return parts


class Recorder:
    """Forward hooks that keep every output of every watched module, per call."""

    def __init__(self, model: torch.nn.Module):
        self.watched = {(i, part): module for i, layer in enumerate(decoder_layers(model))
                        for part, module in layer_parts(layer).items()}
        self.outputs: dict[tuple[int, str], list[torch.Tensor]] = {}

    @contextmanager
    def recording(self):
        self.outputs = {key: [] for key in self.watched}
        handles = [module.register_forward_hook(self._hook(key)) for key, module in self.watched.items()]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, key):
        def keep(_module, _inputs, output):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 3:
                self.outputs[key].append(tensor.detach().double().cpu())
        return keep

    def sequences(self) -> dict[tuple[int, str], torch.Tensor]:
        """Each module's outputs joined along the sequence: [B, T, H] for the whole path."""
        joined = {}
        for key, pieces in self.outputs.items():
            if pieces and all(p.shape[0] == pieces[0].shape[0] and p.shape[2] == pieces[0].shape[2] for p in pieces):
                joined[key] = torch.cat(pieces, dim=1)
        return joined


def relative_difference(reference: torch.Tensor, candidate: torch.Tensor, checked: torch.Tensor):
    """(largest |difference| over the largest |reference|, per-position relative difference [B, T])."""
    per_position = (reference - candidate).abs().amax(-1).masked_fill(~checked, 0.0)
    scale = reference.abs().amax(-1).masked_fill(~checked, 0.0).max().clamp(min=1e-12)
    relative = per_position / scale
    return float(relative.max()), relative


def compare_layers(reference: dict, candidate: dict, checked: torch.Tensor, threshold: float) -> list[dict]:
    """Per layer, each part's relative difference and the first position past ``threshold``."""
    layers: dict[int, dict] = {}
    for key in sorted(set(reference) & set(candidate)):
        ref, cand = reference[key], candidate[key]
        if ref.shape != cand.shape or ref.shape[:2] != checked.shape:
            continue
        worst, relative = relative_difference(ref, cand, checked)
        entry = layers.setdefault(key[0], {"layer": key[0]})
        entry[key[1]] = worst
        hits = (relative > threshold).nonzero()
        if len(hits):
            entry.setdefault("positions", {})[key[1]] = int(hits[:, 1].min())
    return [layers[i] for i in sorted(layers)]


def first_break(layers: list[dict], threshold: float) -> dict | None:
    """The earliest layer, and the earliest part in it (keys, values, attention, MLP, output), past ``threshold``."""
    for entry in layers:
        for part in PARTS:
            if entry.get(part, 0.0) > threshold:
                return {"layer": entry["layer"], "part": part,
                        "position": entry.get("positions", {}).get(part), "relative_difference": entry[part]}
    return None


def explain(first: dict | None, paths: str) -> str:
    if first is None:
        return (f"{paths}: every layer agrees within rounding, so the difference arises outside the decoder "
                "layers (the logits head, generate()'s own bookkeeping, or how the paths are driven).")
    where = f"layer {first['layer']}, {PART_NAMES[first['part']]}"
    at = f" from position {first['position']}" if first.get("position") is not None else ""
    hint = {"keys": "what the cache stores is wrong: look at positions / rotary embeddings when writing keys",
            "values": "what the cache stores is wrong: look at how values are written",
            "attention": "the cache holds the right keys and values, but attention over it differs: look at the "
                         "mask, position bias (ALiBi), scale or window used with a cache",
            "mlp": "attention agrees but the MLP output differs",
            "output": "the layer's parts agree but its output differs: look at the residual/norm wiring"}[first["part"]]
    return f"{paths} first part at {where}{at}: {hint}."


def threshold_for(tolerance: float, logit_scale: float | None) -> float:
    relative = tolerance / logit_scale if logit_scale else 0.0
    return max(MIN_RELATIVE_THRESHOLD, relative)


@torch.inference_mode()
def cached_vs_uncached(backend: Backend, case: Case, tokens: torch.Tensor | None, threshold: float) -> dict:
    """Localise a cached-vs-uncached divergence on one backend, teacher-forced on ``tokens``."""
    module = backend.module()
    if module is None or not decoder_layers(module):
        return {"unavailable": "the model has no decoder layers fuzzkv can hook"}
    recorder = Recorder(module)
    with recorder.recording():
        cached: Trace = backend.cached(case, tokens)
    cached_states = recorder.sequences()
    with recorder.recording():
        uncached(backend, cached.tokens, cached.attention_mask, cached.encoder)
    checked = cached.attention_mask[:, :-1].bool().cpu()
    layers = compare_layers(recorder.sequences(), cached_states, checked, threshold)
    _add_cache_contents(backend, case, cached, layers, threshold)
    return _finish(layers, threshold, f"cached ({case.cache} cache) vs uncached on {backend.name}")


def _add_cache_contents(backend: Backend, case: Case, cached: Trace, layers: list[dict], threshold: float) -> None:
    by_layer = {entry["layer"]: entry for entry in layers}
    real = cached.attention_mask.bool().cpu()
    for i, part, incremental, one_pass in backend.cache_contents(case, cached.tokens):
        slots = incremental.shape[2]
        if incremental.shape != one_pass.shape or slots > real.shape[1]:
            continue
        # [B, heads, slots, d] -> [B, slots]; padding slots hold whatever a fully masked query
        # computed, which differs legitimately between paths, so only real tokens count.
        real_slots = real[:, :slots]
        scale = one_pass.double().abs().amax((1, 3)).masked_fill(~real_slots, 0.0).max().clamp(min=1e-12)
        diff = (incremental.double() - one_pass.double()).abs().amax((1, 3)).masked_fill(~real_slots, 0.0)
        relative = diff.amax(0) / scale
        entry = by_layer.setdefault(i, {"layer": i})
        entry[part] = float(relative.max())
        hits = (relative > threshold).nonzero()
        if len(hits):
            entry.setdefault("positions", {})[part] = int(hits.min())
    layers[:] = [by_layer[i] for i in sorted(by_layer)]


@torch.inference_mode()
def across_backends(reference_backend: Backend, candidate_backend: Backend, tokens: torch.Tensor,
                    attention_mask: torch.Tensor, threshold: float) -> dict:
    """Localise where two implementations of one model part on the uncached path (the cross oracle)."""
    reference_module, candidate_module = reference_backend.module(), candidate_backend.module()
    if reference_module is None or candidate_module is None or \
            len(decoder_layers(reference_module)) != len(decoder_layers(candidate_module)):
        return {"unavailable": "the two implementations' layers cannot be matched one to one"}
    states = []
    for backend, module in ((reference_backend, reference_module), (candidate_backend, candidate_module)):
        recorder = Recorder(module)
        with recorder.recording():
            backend.reference(tokens, attention_mask)
        states.append(recorder.sequences())
    # states holds exactly two dicts: the reference's, then the candidate's.
    layers = compare_layers(*cast("tuple[dict, dict]", states), attention_mask[:, :-1].bool().cpu(), threshold)
    names = f"{candidate_backend.name} vs {reference_backend.name} (uncached)"
    return _finish(layers, threshold, names)


def _finish(layers: list[dict], threshold: float, paths: str) -> dict:
    first = first_break(layers, threshold)
    return {"paths": paths, "threshold": threshold, "layers": layers, "first": first,
            "explanation": explain(first, paths)}


def diagnose(lane: Lane, verdict: Verdict) -> dict[str, Any]:
    """Localise a mismatch verdict's minimal case on ``lane`` (the lane knows how: one backend or a pair)."""
    threshold = threshold_for(verdict.tolerance, verdict.metrics.logit_scale if verdict.metrics else None)
    return lane.diagnose(verdict, threshold)
