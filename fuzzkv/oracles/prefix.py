"""The prefix-reuse oracle's paths: a prefix cache that went through one cache operation (deep copy, crop,
batch selection, reorder), then continued, against a fresh cache fed the same tokens; or the library's generate()
prefilling the prompt in pieces of the prefix's length, against the uncached forward over its tokens."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, against_uncached, run_path, single


def _prefix_reuse(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    operation = case.setting("operation")
    if operation == "chunked-generate":  # generate() prefilling in pieces, vs the uncached forward of its tokens
        return against_uncached(backend, f"generate(prefill_chunk_size={case.setting('prefill_chunk_size')})",
                                backend.generate, case)
    fresh = run_path("fresh cache", backend.cached, case)
    return fresh, run_path(f"prefix cache after {operation}", backend.prefix_reused, case, fresh.tokens, operation)


PAIRS: dict[str, Pairs] = {"prefix-reuse": single("reused prefix vs fresh", _prefix_reuse)}
