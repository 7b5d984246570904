"""Oracles: each states one property a KV cache must keep, as paths that must agree.

This module is the catalogue: names, descriptions, the strategy that feeds each oracle, the
lanes it runs on and what it needs from a backend. It imports no torch, so the CLI can list
and validate oracles without loading a model. The paths each oracle compares live in one
module per family (:mod:`.core`, :mod:`.tl`, :mod:`.cross`), and :func:`.check.check` runs
them; an exception in a path is itself a finding (kind "error"), never a crash of fuzzkv.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from hypothesis.strategies import SearchStrategy

from fuzzkv.case import Case
from fuzzkv.features import (
    ASSISTED_DECODING,
    ATTENTION_IMPLEMENTATIONS,
    BEAM_SEARCH,
    CACHE_OPERATIONS,
    CACHE_RESET,
    COMPILED_DECODING,
    CONTINUOUS_BATCHING,
    OFFLOADED_CACHE,
    PADDED_POSITIONS,
    QUANTIZED_CACHE,
    STATIC_CACHE,
)
from fuzzkv.strategies import (
    CaseSpace,
    assisted_settings,
    beam_settings,
    cases,
    equal_lengths,
    generate_settings,
    padding_settings,
    paged_settings,
    prefix_settings,
    quantized_settings,
    shared_prefixes,
    with_settings,
)


@dataclass(frozen=True)
class Oracle:
    """A named property: the strategy that feeds it, the family module holding its paths, and
    the lanes it runs on ("hf", "tl", "torchtune"; "cross" for HF vs TransformerLens, "cross-torchtune" for HF vs
    torchtune)."""

    name: str
    description: str
    strategy: Callable[[CaseSpace], SearchStrategy[Case]]
    family: str  # the module under fuzzkv.oracles whose PAIRS[name] gives the comparisons
    lanes: tuple[str, ...] = ("hf",)
    min_batch: int = 1  # a backend that runs smaller batches only cannot run this oracle
    needs: frozenset[str] = frozenset()  # backend features required (e.g. "static-cache")
    # In the default set (no --oracle). A new surface's oracle is opt-in until 100 clean examples on every
    # registry model have shown it raises no false alarm (docs/reference/oracles.md).
    default: bool = True
    # Devices (torch device types) on which an opt-in oracle is in the default set all the same: where it costs
    # what the others do (compiling on a CPU takes 10-40 s per model).
    default_on: tuple[str, ...] = ()

    def is_default(self, device: str) -> bool:
        """Whether this oracle runs without --oracle on ``device`` ("cpu", "cuda", "cuda:1", ...)."""
        return self.default or device.split(":")[0] in self.default_on


def _oracles(*oracles: Oracle) -> dict[str, Oracle]:
    return {oracle.name: oracle for oracle in oracles}


ORACLES: dict[str, Oracle] = _oracles(
    Oracle("decode", "incremental cached decoding vs one teacher-forced uncached forward",
           lambda s: cases(s, continued=True), "core", ("hf", "torchtune")),
    Oracle("batch", "each row of a padded batch vs the same prompt alone at batch size 1",
           lambda s: cases(s, min_batch=2, chunked=False, continued=True), "core", ("hf", "tl", "torchtune"), min_batch=2,
           needs=frozenset({PADDED_POSITIONS})),
    Oracle("chunked", "prefill fed in chunks vs in one pass",
           lambda s: cases(s, min_chunks=2, continued=True), "core", ("hf", "tl", "torchtune")),
    Oracle("cache-impl", "static cache vs dynamic cache",
           lambda s: cases(s, caches=("static",), continued=True), "core", needs=frozenset({STATIC_CACHE})),
    Oracle("cache-reuse", "a cache used for a larger batch, reset and reused vs a fresh cache",
           lambda s: cases(s, reuse=True, continued=True, caches=s.reset_caches), "core", ("hf", "torchtune"),
           needs=frozenset({CACHE_RESET})),
    Oracle("generate", "the library's generate (greedy, each cache implementation the installed version names) vs "
           "the teacher-forced reference", lambda s: with_settings(
               cases(s, chunked=False, padding=("left",), caches=("dynamic",) if s.generate_caches else None),
               generate_settings(s)), "core", ("hf", "torchtune")),
    Oracle("tl-decode", "TransformerLens cached vs uncached: forward with a cache (a padded batch's mask passed, or "
           "inferred from the pad token where the release does that), and its generate() (a padded batch: vs each "
           "prompt alone)",
           lambda s: with_settings(cases(s, padding=("left",), caches=("dynamic",)), padding_settings(s)), "tl",
           ("tl",)),
    Oracle("cross", "each other backend (TransformerLens, torchtune) vs HF on the same case and weights: uncached, "
           "cached and greedy tokens", lambda s: cases(s, caches=("dynamic",)), "cross", ("cross", "cross-torchtune")),
    Oracle("beam", "beam search with a cache (reordered every step) vs the uncached forward over each returned sequence",
           lambda s: with_settings(cases(s, chunked=False, padding=("left",)), beam_settings), "beam",
           needs=frozenset({BEAM_SEARCH}), default=False),
    Oracle("offloaded", "an offloaded dynamic cache (layers kept on the CPU between uses) vs a dynamic cache",
           lambda s: cases(s, caches=("dynamic",), continued=True), "core", needs=frozenset({OFFLOADED_CACHE}),
           default=False),
    Oracle("attn-impl", "the case under every other attention implementation the model declares (eager, sdpa; "
           "flex_attention on CUDA), cached and uncached, vs the run's own",
           lambda s: cases(s, continued=True), "attention", needs=frozenset({ATTENTION_IMPLEMENTATIONS}), default=False),
    # transformers documents assisted generation for batch size 1 only ("assisted generate is only supported for
    # batch_size = 1").
    Oracle("assisted", "assisted decoding (a draft that is often rejected, or prompt lookup) vs the uncached forward "
           "over the tokens it generated", lambda s: with_settings(
               cases(replace(s, max_batch=1), chunked=False, padding=("left",)), assisted_settings),
           "speculative", needs=frozenset({ASSISTED_DECODING}), default=False),
    Oracle("prefix-reuse", "a prefix cache deep-copied, cropped, batch-selected or reordered, then continued, "
           "vs a fresh cache; or generate() prefilling in chunks vs the uncached forward",
           lambda s: with_settings(cases(s, min_chunks=2, continued=True), prefix_settings),
           "prefix", needs=frozenset({CACHE_OPERATIONS}), default=False),
    Oracle("compiled", "the library's generate() with torch.compile'd decoding steps on a static cache vs the "
           "uncached forward over the tokens it generated",
           lambda s: cases(s, chunked=False, padding=("left",), caches=("static",)), "compiled",
           needs=frozenset({STATIC_CACHE, COMPILED_DECODING}), default=False, default_on=("cuda",)),
    Oracle("quantized", "a quantized cache (quanto, HQQ, FP8; drawn bits, axes, groups, residual): each row vs the "
           "row alone and its operations vs a fresh quantized cache (float64), loss vs unquantized within its "
           "calibrated bound", lambda s: with_settings(
               cases(s, min_chunks=2, continued=True, caches=("quantized",)).map(equal_lengths), quantized_settings(s)),
           "quantized", needs=frozenset({QUANTIZED_CACHE}), default=False),
    Oracle("continuous-batching", "each prompt as a request through continuous batching (paged cache, drawn pages, "
           "blocks and batch limits) vs the uncached forward: greedy tokens and log-probs",
           lambda s: with_settings(shared_prefixes(cases(s, chunked=False, padding=("left",), caches=("dynamic",))),
                                   paged_settings), "paged", needs=frozenset({CONTINUOUS_BATCHING}), default=False),
)
