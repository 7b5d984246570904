"""The cross-implementation oracle: two backends (same weights) on the same case."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.backends.drivers import title_of
from fuzzkv.case import Case
from fuzzkv.oracles.interface import Comparison, Oracle, run_path, teacher_forced
from fuzzkv.strategies import cases

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Pair


def _cross(pair: Pair, case: Case) -> list[Comparison]:
    reference, candidate = pair.reference, pair.candidate
    ref_name, cand_name = (title_of(b.name) for b in (reference, candidate))
    ref_cached = run_path(f"{ref_name} cached", reference.cached, case)
    cand_cached = run_path(f"{cand_name} cached", candidate.cached, case, ref_cached.tokens)
    ref_uncached = teacher_forced(reference, ref_cached, f"{ref_name} uncached")
    cand_uncached = teacher_forced(candidate, cand_cached, f"{cand_name} uncached")
    return [Comparison(f"uncached: {cand_name} vs {ref_name}", ref_uncached, cand_uncached),
            Comparison(f"cached: {cand_name} vs {ref_name}", ref_cached, cand_cached)]


# HF's paths on the HF model (``{hf}``: the prefix of their names where another backend's path code replaced
# them), the other backend's on ``subject``.
CROSS: Oracle[Pair] = Oracle(
    "cross", "each other backend (TransformerLens, torchtune) vs HF on the same case and weights: uncached, "
    "cached and greedy tokens", lambda s: cases(s, caches=("dynamic",)), _cross, lanes=("cross*",), script='''
tokens, mask, from_hf_cached = {hf}cached(model, CASE, PAD, DEVICE)
from_hf_uncached = {hf}reference(model, tokens, mask)
_, _, other_cached = cached(subject, CASE, PAD, DEVICE, forced=tokens)
other_uncached = reference(subject, tokens, mask)
report("uncached: {name} vs HF", from_hf_uncached, other_uncached, mask[:, :-1].bool())
report("cached: {name} vs HF", from_hf_cached, other_cached, mask[:, :-1].bool())
''')
