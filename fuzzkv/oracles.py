"""Oracles: each states one property a KV cache must keep, as two paths that must agree.

Every oracle returns a :class:`~fuzzkv.verdict.Verdict` with numbers. An exception in
either path is itself a finding (kind "error"), never a crash of fuzzkv.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from fuzzkv.backends import Backend, PathError, Trace
from fuzzkv.case import Case
from fuzzkv.strategies import CaseSpace, cases
from fuzzkv.verdict import Verdict, compare


@dataclass(frozen=True)
class Oracle:
    """A named property: the strategy that feeds it, the comparisons that test it, and the
    backend lanes it runs on ("hf", "tl", or "cross" for HF vs TransformerLens)."""

    name: str
    description: str
    strategy: Callable[[CaseSpace], object]
    pairs: Callable[[object, Case], list[tuple[str, Trace, Trace]]]  # (label, reference, candidate)
    lanes: tuple[str, ...] = ("hf",)
    min_batch: int = 1  # a backend that runs smaller batches only cannot run this oracle
    needs: frozenset = frozenset()  # backend features required (e.g. "static-cache")

    def check(self, backend, case: Case, tolerance: float) -> Verdict:
        """Run every comparison; the verdict reports the worst one."""
        try:
            comparisons = self.pairs(backend, case)
        except PathError as exc:
            return Verdict(self.name, case, "error", tolerance, error=str(exc), error_type=type(exc.error).__name__)
        worst = None
        for label, reference, candidate in comparisons:
            blind = _non_finite(reference, candidate)
            if blind:
                return Verdict(self.name, case, "error", tolerance, error=f"{label}: {blind}", error_type="NonFinite")
            metrics = compare(reference.logits, candidate.logits, reference.checked & candidate.checked, tolerance)
            if worst is None or metrics.max_abs_diff > worst[1].max_abs_diff:
                worst = (label, metrics)
        label, metrics = worst
        kind = "mismatch" if metrics.max_abs_diff > tolerance else "pass"
        return Verdict(self.name, case, kind, tolerance, metrics=metrics, comparison=label)


def _non_finite(reference: Trace, candidate: Trace) -> str | None:
    """Why a comparison cannot see anything: NaN or Inf logits in the reference path at compared positions."""
    checked = reference.checked & candidate.checked
    if bool(torch.isfinite(reference.logits[checked]).all()):
        return None
    return ("the reference path's logits are NaN or Inf, so no comparison can tell cached from uncached "
            "(the model or its weights produce non-finite values)")


def single(label: str, pair):
    """An oracle with one comparison."""
    return lambda backend, case: [(label, *pair(backend, case))]


def run_path(path: str, fn, *args, **kwargs):
    """Call one path; any exception becomes a :class:`PathError` naming the path."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a model's exception is a finding, not our crash
        raise PathError(path, exc) from exc


def teacher_forced(backend: Backend, trace: Trace, path: str = "uncached reference") -> Trace:
    """The uncached reference for ``trace``'s final sequence: one forward pass."""
    logits = run_path(path, backend.reference, trace.tokens, trace.attention_mask)
    return Trace(trace.tokens, trace.attention_mask, logits, trace.attention_mask[:, :-1].bool())


def _decode(backend, case):
    cached = run_path("cached", backend.cached, case)
    return teacher_forced(backend, cached), cached


def _batch(backend, case):
    batched = run_path("batched cached", backend.cached, case)
    rows = []
    for row, prompt in enumerate(case.prompts):
        alone = replace(case, prompts=(prompt,), prefill_chunks=())
        mask = batched.attention_mask[row].bool()
        forced = batched.tokens[row][mask].unsqueeze(0)
        rows.append(run_path(f"row {row} alone", backend.cached, alone, forced))
    return batched, _scatter(batched, rows)


def _scatter(batched: Trace, rows: list[Trace]) -> Trace:
    """Place each single-row trace's logits at that row's real positions in the batch."""
    logits = torch.full_like(batched.logits, float("nan"))
    checked = torch.zeros_like(batched.checked)
    for row, single in enumerate(rows):
        where = batched.attention_mask[row, :-1].bool().nonzero().squeeze(-1)
        logits[row, where] = single.logits[0, : len(where)]
        checked[row, where] = True
    return Trace(batched.tokens, batched.attention_mask, logits, checked)


def _chunked(backend, case):
    whole = run_path("single prefill", backend.cached, case, chunks=(case.padded_length,))
    return whole, run_path("chunked prefill", backend.cached, case, whole.tokens)


def _cache_impl(backend, case):
    dynamic = run_path("dynamic cache", backend.cached, case, cache="dynamic")
    return dynamic, run_path("static cache", backend.cached, case, dynamic.tokens, cache="static")


def _cache_reuse(backend, case):
    fresh = run_path("fresh cache", backend.cached, case)
    return fresh, run_path("reused cache", backend.reused, case, fresh.tokens)


def _generate(backend, case):
    generated = run_path("generate", backend.generate, case)
    return teacher_forced(backend, generated), generated


def _tl_decode(backend, case):
    cached = run_path("TransformerLens cached forward", backend.cached, case)
    generated = run_path("TransformerLens generate(use_past_kv_cache=True)", backend.generate, case)
    return [("forward with past_key_values", teacher_forced(backend, cached), cached),
            ("generate(use_past_kv_cache=True)", teacher_forced(backend, generated), generated)]


def _cross(both, case):
    hf_cached = run_path("HF cached", both.hf.cached, case)
    tl_cached = run_path("TransformerLens cached", both.tl.cached, case, hf_cached.tokens)
    hf_ref = teacher_forced(both.hf, hf_cached, "HF uncached")
    tl_ref = teacher_forced(both.tl, tl_cached, "TransformerLens uncached")
    return [("uncached: TransformerLens vs HF", hf_ref, tl_ref), ("cached: TransformerLens vs HF", hf_cached, tl_cached)]


ORACLES: dict[str, Oracle] = {o.name: o for o in (
    Oracle("decode", "incremental cached decoding vs one teacher-forced uncached forward",
           lambda s: cases(s), single("cached vs uncached", _decode)),
    Oracle("batch", "each row of a padded batch vs the same prompt alone at batch size 1",
           lambda s: cases(s, min_batch=2, chunked=False), single("batch row vs alone", _batch), ("hf", "tl"),
           min_batch=2),
    Oracle("chunked", "prefill fed in chunks vs in one pass",
           lambda s: cases(s, min_chunks=2), single("chunked vs one pass", _chunked), ("hf", "tl")),
    Oracle("cache-impl", "static cache vs dynamic cache",
           lambda s: cases(s, caches=("static",)), single("static vs dynamic", _cache_impl),
           needs=frozenset({"static-cache"})),
    Oracle("cache-reuse", "a cache used for a larger batch, reset and reused vs a fresh cache",
           lambda s: cases(s, reuse=True), single("reused vs fresh", _cache_reuse), needs=frozenset({"cache-reset"})),
    Oracle("generate", "the library's generate (greedy, each cache implementation) vs the teacher-forced reference",
           lambda s: cases(s, chunked=False, padding=("left",)), single("generate vs uncached", _generate)),
    Oracle("tl-decode", "TransformerLens cached vs uncached: forward with a cache, and its generate()",
           lambda s: cases(s, padding=("left",), caches=("dynamic",)), _tl_decode, ("tl",)),
    Oracle("cross", "TransformerLens vs HF on the same case and weights: uncached, cached and greedy tokens",
           lambda s: cases(s, caches=("dynamic",)), _cross, ("cross",)),
)}
