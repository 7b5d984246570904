"""The TransformerLens oracle's paths: its forward with a cache, and its own generate(), each vs uncached."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend
from fuzzkv.case import Case
from fuzzkv.oracles.check import Comparison, Pairs, run_path, teacher_forced


def _tl_decode(backend: Backend, case: Case) -> list[Comparison]:
    cached = run_path("TransformerLens cached forward", backend.cached, case)
    generated = run_path("TransformerLens generate(use_past_kv_cache=True)", backend.generate, case)
    return [Comparison("forward with past_key_values", teacher_forced(backend, cached), cached),
            Comparison("generate(use_past_kv_cache=True)", teacher_forced(backend, generated), generated)]


PAIRS: dict[str, Pairs] = {"tl-decode": _tl_decode}
