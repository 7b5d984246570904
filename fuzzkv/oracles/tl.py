"""The TransformerLens oracle: its forward with a cache, and its own generate(), each vs uncached."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.oracles.core import one_chunk, uncached_alone
from fuzzkv.oracles.interface import Comparison, Oracle, run_path, teacher_forced
from fuzzkv.strategies import cases, padding_settings, with_settings

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace


def _tl_decode(backend: Backend, case: Case) -> list[Comparison]:
    cached = run_path("TransformerLens cached forward", backend.cached, case)
    generated = run_path("TransformerLens generate(use_past_kv_cache=True)", backend.generate, case)
    return [Comparison("forward with past_key_values", teacher_forced(backend, cached), cached),
            _generated(backend, case, generated)]


def _generated(backend: Backend, case: Case, generated: Trace) -> Comparison:
    """generate() against one uncached forward over its tokens; on a padded batch, against each prompt alone
    (a batch of prompts must generate what each prompt does by itself)."""
    if not case.padded:
        return Comparison("generate(use_past_kv_cache=True)", teacher_forced(backend, generated), generated)
    return Comparison("generate(use_past_kv_cache=True) vs each prompt alone",
                      uncached_alone(backend, generated), generated)


TL_DECODE: Oracle[Backend] = Oracle(
    "tl-decode", "TransformerLens cached vs uncached: forward with a cache (a padded batch's mask passed, or "
    "inferred from the pad token where the release does that), and its generate() (a padded batch: vs each "
    "prompt alone)", lambda s: with_settings(cases(s, padding=("left",), caches=("dynamic",)), padding_settings(s)),
    _tl_decode, lanes=("tl",), fit=one_chunk, script='''
tokens, mask, got = cached(subject, CASE, PAD, DEVICE)
report("forward with a cache vs uncached", reference(subject, tokens, mask), got, mask[:, :-1].bool())
ids, mask = padded(CASE, PAD, DEVICE)
sequences, steps = {generate}
if len({len(p) for p in CASE["prompts"]}) > 1:  # a padded batch: each prompt alone, uncached, is what it must equal
    ref, against = uncached_alone(subject, sequences, mask)[:, ids.shape[1] - 1:], "each prompt alone, uncached"
else:
    ref, against = teacher_forced(subject, sequences, mask, ids.shape[1]), "uncached"
report(f"generate(use_past_kv_cache=True) vs {against}", ref, torch.stack([s.float() for s in steps], 1),
       torch.ones(ref.shape[:2], dtype=torch.bool))
''')

