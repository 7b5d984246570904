"""The core oracles' paths, on one backend: decode, batch, chunked, cache-impl, cache-reuse, generate."""

from __future__ import annotations

from dataclasses import replace

import torch

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, against_uncached, run_path, single, teacher_forced


def _decode(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    cached = run_path("cached", backend.cached, case)
    return teacher_forced(backend, cached), cached


def _batch(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    return batch_rows_alone(backend, case, run_path("batched cached", backend.cached, case))


def batch_rows_alone(backend: Backend, case: Case, batched: Trace, same_chunks: bool = False) -> tuple[Trace, Trace]:
    """``batched`` (the cached path over the whole batch) and each of its rows run alone with the same cache
    kind, fed the same tokens, placed at the row's positions (``same_chunks``: prefilled in the batch's chunks,
    for rows as long as the batch's)."""
    rows = []
    for row, prompt in enumerate(case.prompts):
        alone = replace(case, prompts=(prompt,), prefill_chunks=case.prefill_chunks if same_chunks else (),
                        continuation=())
        forced = batched.tokens[row][batched.attention_mask[row].bool()].unsqueeze(0)
        rows.append(run_path(f"row {row} alone", backend.cached, alone, forced))
    return batched, _scatter(batched, rows)


def uncached_alone(backend: Backend, trace: Trace) -> Trace:
    """The uncached reference of each row of ``trace`` alone (its real tokens with no padding, one forward pass
    each), placed at the row's positions: what every row of a padded batch must equal."""
    rows = []
    for row, real in enumerate(trace.attention_mask.bool()):
        alone = trace.tokens[row][real].unsqueeze(0)
        logits = run_path(f"uncached, row {row} alone", backend.reference, alone, torch.ones_like(alone))
        rows.append(Trace.everywhere(alone, torch.ones_like(alone), logits))
    return _scatter(trace, rows)


def _scatter(batched: Trace, rows: list[Trace]) -> Trace:
    """Place each single-row trace's logits at that row's real positions in the batch."""
    logits = torch.full_like(batched.logits, float("nan"), dtype=rows[0].logits.dtype)  # the rows' precision
    checked = torch.zeros_like(batched.checked)
    for row, alone in enumerate(rows):
        where = batched.attention_mask[row, :-1].bool().nonzero().squeeze(-1)
        logits[row, where] = alone.logits[0, : len(where)]
        checked[row, where] = True
    return Trace(batched.tokens, batched.attention_mask, logits, checked)


def _chunked(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    whole = run_path("single prefill", backend.cached, case, chunks=(case.padded_length,))
    return whole, run_path("chunked prefill", backend.cached, case, whole.tokens)


def _cache_impl(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    dynamic = run_path("dynamic cache", backend.cached, case, cache="dynamic")
    return dynamic, run_path("static cache", backend.cached, case, dynamic.tokens, cache="static")


def _offloaded(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    dynamic = run_path("dynamic cache", backend.cached, case, cache="dynamic")
    return dynamic, run_path("offloaded cache", backend.cached, case, dynamic.tokens, cache="offloaded")


def _cache_reuse(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    fresh = run_path("fresh cache", backend.cached, case)
    return fresh, run_path("reused cache", backend.reused, case, fresh.tokens)


def _generate(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    return against_uncached(backend, "generate", backend.generate, case)


PAIRS: dict[str, Pairs] = {
    "decode": single("cached vs uncached", _decode),
    "batch": single("batch row vs alone", _batch),
    "chunked": single("chunked vs one pass", _chunked),
    "cache-impl": single("static vs dynamic", _cache_impl),
    "cache-reuse": single("reused vs fresh", _cache_reuse),
    "offloaded": single("offloaded vs dynamic", _offloaded),
    "generate": single("generate vs uncached", _generate),
}
