"""The cross-implementation oracle's paths: two backends (same weights) on the same case."""

from __future__ import annotations

from fuzzkv.backends.interface import Pair
from fuzzkv.case import Case
from fuzzkv.oracles.check import Comparison, Pairs, run_path, teacher_forced

# How a comparison names each backend.
TITLES = {"hf": "HF", "tl": "TransformerLens", "torchtune": "torchtune"}


def _cross(pair: Pair, case: Case) -> list[Comparison]:
    reference, candidate = pair.reference, pair.candidate
    ref_name, cand_name = (TITLES.get(b.name, b.name) for b in (reference, candidate))
    ref_cached = run_path(f"{ref_name} cached", reference.cached, case)
    cand_cached = run_path(f"{cand_name} cached", candidate.cached, case, ref_cached.tokens)
    ref_uncached = teacher_forced(reference, ref_cached, f"{ref_name} uncached")
    cand_uncached = teacher_forced(candidate, cand_cached, f"{cand_name} uncached")
    return [Comparison(f"uncached: {cand_name} vs {ref_name}", ref_uncached, cand_uncached),
            Comparison(f"cached: {cand_name} vs {ref_name}", ref_cached, cand_cached)]


PAIRS: dict[str, Pairs] = {"cross": _cross}
