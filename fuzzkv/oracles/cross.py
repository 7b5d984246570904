"""The cross-implementation oracle's paths: two backends (same weights) on the same case."""

from __future__ import annotations

from fuzzkv.backends.interface import Pair
from fuzzkv.case import Case
from fuzzkv.oracles.check import Comparison, Pairs, run_path, teacher_forced


def _cross(pair: Pair, case: Case) -> list[Comparison]:
    reference, candidate = pair.reference, pair.candidate
    ref_cached = run_path("HF cached", reference.cached, case)
    cand_cached = run_path("TransformerLens cached", candidate.cached, case, ref_cached.tokens)
    ref_uncached = teacher_forced(reference, ref_cached, "HF uncached")
    cand_uncached = teacher_forced(candidate, cand_cached, "TransformerLens uncached")
    return [Comparison("uncached: TransformerLens vs HF", ref_uncached, cand_uncached),
            Comparison("cached: TransformerLens vs HF", ref_cached, cand_cached)]


PAIRS: dict[str, Pairs] = {"cross": _cross}
