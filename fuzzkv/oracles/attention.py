"""The attention-implementation oracle: the same case under every attention implementation the model declares
and the device runs (eager, sdpa; flex_attention on CUDA), cached and uncached, against the run's own. Each
comparison names the implementation that differs from the run's, so the odd one out is in the label."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import ATTENTION_IMPLEMENTATIONS
from fuzzkv.oracles.interface import Comparison, Oracle, run_path, teacher_forced
from fuzzkv.strategies import cases

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend


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


ATTN_IMPL: Oracle[Backend] = Oracle(
    "attn-impl", "the case under every other attention implementation the model declares (eager, sdpa; "
    "flex_attention on CUDA), cached and uncached, vs the run's own", lambda s: cases(s, continued=True),
    _attn_impl, needs=frozenset({ATTENTION_IMPLEMENTATIONS}), default=False, script='''
tokens, mask, run_cached = cached(subject, CASE, PAD, DEVICE)
run_uncached = reference(subject, tokens, mask)
for attn in {attentions}:  # the model's other attention implementations, as fuzzkv ran them
    other = copy.deepcopy(subject)
    other.set_attn_implementation(attn)
    _, _, other_cached = cached(other, CASE, PAD, DEVICE, forced=tokens)
    report(f"cached: {attn} vs the run's", run_cached, other_cached, mask[:, :-1].bool())
    report(f"uncached: {attn} vs the run's", run_uncached, reference(other, tokens, mask), mask[:, :-1].bool())
''')
