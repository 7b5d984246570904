"""The core oracles, on one backend: decode, batch, chunked, cache-impl, cache-reuse, offloaded, generate."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fuzzkv.backends.interface import uncached
from fuzzkv.case import Case
from fuzzkv.features import CACHE_RESET, OFFLOADED_CACHE, PADDED_POSITIONS, STATIC_CACHE
from fuzzkv.oracles.interface import Oracle, against_uncached, run_path, single, teacher_forced
from fuzzkv.strategies import cases, generate_settings, with_settings

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace


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
    for row in range(case.batch_size):
        alone = replace(case.rows(row, row + 1), prefill_chunks=case.prefill_chunks if same_chunks else (),
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
        logits = run_path(f"uncached, row {row} alone", uncached, backend, alone, alone.new_ones(alone.shape),
                          trace.row_encoder(row))
        rows.append(trace.everywhere(alone, alone.new_ones(alone.shape), logits))
    return _scatter(trace, rows)


def _scatter(batched: Trace, rows: list[Trace]) -> Trace:
    """Place each single-row trace's logits at that row's real positions in the batch."""
    logits = rows[0].logits.new_full(batched.logits.shape, float("nan"))  # the rows' precision
    checked = batched.checked.new_zeros(batched.checked.shape)
    for row, alone in enumerate(rows):
        where = batched.attention_mask[row, :-1].bool().nonzero().squeeze(-1)
        logits[row, where] = alone.logits[0, : len(where)]
        checked[row, where] = True
    return replace(batched, logits=logits, checked=checked)


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


# Fits for calibration: a case's prefill as one chunk, for the oracles whose strategy draws no chunks.
def one_chunk(case: Case) -> Case:
    """``case`` prefilled in one chunk."""
    return replace(case, prefill_chunks=())


DECODE: Oracle[Backend] = Oracle(
    "decode", "incremental cached decoding vs one teacher-forced uncached forward",
    lambda s: cases(s, continued=True), single("cached vs uncached", _decode), lanes=("hf", "torchtune"),
    fit=lambda case: case, script='''
tokens, mask, got = cached(subject, CASE, PAD, DEVICE)
report("cached vs uncached", reference(subject, tokens, mask), got, mask[:, :-1].bool())
''')

BATCH: Oracle[Backend] = Oracle(
    "batch", "each row of a padded batch vs the same prompt alone at batch size 1",
    lambda s: cases(s, min_batch=2, chunked=False, continued=True), single("batch row vs alone", _batch),
    lanes=("hf", "tl", "torchtune"), min_batch=2, needs=frozenset({PADDED_POSITIONS}),
    fit=lambda case: one_chunk(case) if case.batch_size >= 2 else None, script='''
tokens, mask, batched = cached(subject, CASE, PAD, DEVICE)
report_rows_alone(subject, batched, tokens, mask)
''')

CHUNKED: Oracle[Backend] = Oracle(
    "chunked", "prefill fed in chunks vs in one pass",
    lambda s: cases(s, min_chunks=2, continued=True), single("chunked vs one pass", _chunked),
    lanes=("hf", "tl", "torchtune"), fit=lambda case: case if len(case.prefill_chunks) >= 2 else None, script='''
tokens, mask, whole = cached(subject, CASE, PAD, DEVICE, chunks=[max(len(p) for p in CASE["prompts"])])
_, _, chunked = cached(subject, CASE, PAD, DEVICE, forced=tokens)
report("chunked vs one pass", whole, chunked, mask[:, :-1].bool())
''')

CACHE_IMPL: Oracle[Backend] = Oracle(
    "cache-impl", "static cache vs dynamic cache",
    lambda s: cases(s, caches=("static",), continued=True), single("static vs dynamic", _cache_impl),
    needs=frozenset({STATIC_CACHE}), fit=lambda case: replace(case, cache="static"), script='''
tokens, mask, dynamic = cached(subject, CASE, PAD, DEVICE, kind="dynamic")
_, _, static = cached(subject, CASE, PAD, DEVICE, kind="static", forced=tokens)
report("static vs dynamic", dynamic, static, mask[:, :-1].bool())
''')

CACHE_REUSE: Oracle[Backend] = Oracle(
    "cache-reuse", "a cache used for a larger batch, reset and reused vs a fresh cache",
    lambda s: cases(s, reuse=True, continued=True, caches=s.reset_caches), single("reused vs fresh", _cache_reuse),
    lanes=("hf", "torchtune"), needs=frozenset({CACHE_RESET}),
    fit=lambda case: replace(case, reuse_batch=case.batch_size + 1), script='''
tokens, mask, fresh = cached(subject, CASE, PAD, DEVICE)
_, _, again = reused(subject, CASE, PAD, DEVICE, tokens)
report("reused vs fresh", fresh, again, mask[:, :-1].bool())
''')

GENERATE: Oracle[Backend] = Oracle(
    "generate", "the library's generate (greedy, each cache implementation the installed version names) vs "
    "the teacher-forced reference", lambda s: with_settings(
        cases(s, chunked=False, padding=("left",), caches=("dynamic",) if s.generate_caches else None),
        generate_settings(s)), single("generate vs uncached", _generate), lanes=("hf", "torchtune"),
    fit=one_chunk, script='''
sequences, mask, steps = generate(subject, CASE, PAD, DEVICE, GENERATE_CACHE)
report_generated("generate vs uncached", sequences, mask, steps)
''')

OFFLOADED: Oracle[Backend] = Oracle(
    "offloaded", "an offloaded dynamic cache (layers kept on the CPU between uses) vs a dynamic cache",
    lambda s: cases(s, caches=("dynamic",), continued=True), single("offloaded vs dynamic", _offloaded),
    needs=frozenset({OFFLOADED_CACHE}), default=False, script='''
tokens, mask, dynamic = cached(subject, CASE, PAD, DEVICE, kind="dynamic")
_, _, offloaded = cached(subject, CASE, PAD, DEVICE, kind="offloaded", forced=tokens)
report("offloaded vs dynamic", dynamic, offloaded, mask[:, :-1].bool())
''')
