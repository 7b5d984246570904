"""The prefix-reuse oracle: a prefix cache that went through one cache operation (deep copy, crop, batch
selection, reorder), then continued, against a fresh cache fed the same tokens; or the library's generate()
prefilling the prompt in pieces of the prefix's length, against the uncached forward over its tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import CACHE_OPERATIONS
from fuzzkv.oracles.interface import Oracle, against_uncached, run_path, single
from fuzzkv.strategies import cases, prefix_settings, with_settings

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace


def _prefix_reuse(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    operation = case.setting("operation")
    if operation == "chunked-generate":  # generate() prefilling in pieces, vs the uncached forward of its tokens
        return against_uncached(backend, f"generate(prefill_chunk_size={case.setting('prefill_chunk_size')})",
                                backend.generate, case)
    fresh = run_path("fresh cache", backend.cached, case)
    return fresh, run_path(f"prefix cache after {operation}", backend.prefix_reused, case, fresh.tokens, operation)


PREFIX_REUSE: Oracle[Backend] = Oracle(
    "prefix-reuse", "a prefix cache deep-copied, cropped, batch-selected or reordered, then continued, "
    "vs a fresh cache; or generate() prefilling in chunks vs the uncached forward",
    lambda s: with_settings(cases(s, min_chunks=2, continued=True), prefix_settings),
    single("reused prefix vs fresh", _prefix_reuse), needs=frozenset({CACHE_OPERATIONS}), default=False, script='''
if CASE["settings"]["operation"] == "chunked-generate":
    sequences, mask, steps = generate(subject, CASE, PAD, DEVICE, GENERATE_CACHE)
    report_generated("reused prefix vs fresh", sequences, mask, steps)
else:
    tokens, mask, fresh = cached(subject, CASE, PAD, DEVICE)
    _, _, resumed = prefix_reused(subject, CASE, PAD, DEVICE, tokens, CASE["settings"]["operation"])
    report("reused prefix vs fresh", fresh, resumed, mask[:, :-1].bool())
''')
