"""The TransformerLens oracle's paths: its forward with a cache, and its own generate(), each vs uncached."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Comparison, Pairs, run_path, teacher_forced
from fuzzkv.oracles.core import uncached_alone


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


PAIRS: dict[str, Pairs] = {"tl-decode": _tl_decode}
