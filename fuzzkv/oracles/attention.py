"""The attention-implementation oracle's paths: the same case under every attention implementation the model
declares and the device runs (eager, sdpa; flex_attention on CUDA), cached and uncached, against the run's own.
Each comparison names the implementation that differs from the run's, so the odd one out is in the label."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend
from fuzzkv.case import Case
from fuzzkv.oracles.check import Comparison, Pairs, run_path, teacher_forced


def _attn_impl(backend: Backend, case: Case) -> list[Comparison]:
    cached = run_path("cached", backend.cached, case)
    uncached = teacher_forced(backend, cached)
    comparisons: list[Comparison] = []
    for attn, variant in run_path("attention implementations", backend.attention_variants).items():
        other = run_path(f"cached ({attn})", variant.cached, case, cached.tokens)
        comparisons += [Comparison(f"cached: {attn} vs the run's", cached, other),
                        Comparison(f"uncached: {attn} vs the run's", uncached,
                                   teacher_forced(variant, other, f"uncached ({attn})"))]
    return comparisons


PAIRS: dict[str, Pairs] = {"attn-impl": _attn_impl}
