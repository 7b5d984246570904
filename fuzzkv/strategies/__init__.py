"""Public, composable Hypothesis strategies for KV-cache test cases.

Use them in your own tests::

    from hypothesis import given
    from fuzzkv.strategies import CaseSpace, cases

    space = CaseSpace(vocab_size=1000, special_ids=(0, 1, 2), sliding_windows=(8,))

    @given(cases(space))
    def test_my_cache(case): ...

Every strategy shrinks toward the simplest case: batch 1, a one-token prompt, one new
token, one prefill chunk, dynamic cache, left padding, token id 0.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ParamSpec, TypeVar, cast

from hypothesis import strategies as st

from fuzzkv.case import DRAWN_CACHES, PADDING_MODE, PADDING_SIDES, Case, wrapped_image
from fuzzkv.quantizers import QUANTIZER_OPTIONS

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class CaseSpace:
    """The bounds cases are drawn from, derived from the model and the run's options."""

    vocab_size: int
    special_ids: tuple[int, ...] = ()
    max_batch: int = 4
    max_prompt_len: int = 16
    max_new_tokens: int = 8
    max_positions: int | None = None
    sliding_windows: tuple[int, ...] = ()
    caches: tuple[str, ...] = DRAWN_CACHES
    head_dim: int | None = None  # the attention heads' width: a quantization group must divide it
    quantizers: tuple[str, ...] = ()  # the quantized-cache backends the library has here (quanto, hqq, fp8)
    generate_caches: tuple[str, ...] = ()  # generate()'s cache_implementation values here ("default" first)
    padding_modes: tuple[str, ...] = ()  # how a padded batch is told to the model, where there is a choice
    reset_caches: tuple[str, ...] | None = None  # the cache kinds a reused case draws (None: any of ``caches``)
    padding_sides: tuple[str, ...] = PADDING_SIDES
    # An encoder-decoder model: each case also draws its rows' encoder inputs, and decoder prompts of one length.
    encoder_decoder: bool = False
    decoder_start: int | None = None  # the token each decoder prompt starts with (generate() puts it first)
    # A vision-language model: prompts may hold images, each a run of ``image_tokens`` of ``image_token`` inside
    # ``image_open`` and ``image_close`` where the model wraps images (none of them drawn as text), up to
    # ``max_images`` per row.
    image_token: int | None = None
    image_tokens: int = 0
    image_open: int | None = None
    image_close: int | None = None
    image_markers: tuple[int, ...] = ()  # more ids a model embeds as part of an image: never drawn as text
    max_images: int = 2
    dtype: str = "float32"
    max_boundary_len: int = 128
    extra_lengths: tuple[int, ...] = field(default=())

    def boundary_lengths(self, new_tokens: int = 1) -> tuple[int, ...]:
        """Prompt lengths where caches change behaviour: W-1, W, W+1 for every sliding
        window, and the length that makes the sequence end exactly at the position limit.
        Lengths beyond ``max_boundary_len`` are left out: they cost too much on big models."""
        points = set(self.extra_lengths)
        for w in self.sliding_windows:
            points.update((w - 1, w, w + 1))
        if self.max_positions:
            points.add(self.max_positions - new_tokens)
        return tuple(sorted(p for p in points if 1 <= p <= self.prompt_limit(new_tokens)))

    def prompt_limit(self, new_tokens: int) -> int:
        """The longest prompt that still fits the position limit and the boundary cap."""
        limit = self.max_positions - new_tokens if self.max_positions else self.max_boundary_len
        return max(1, min(limit, max(self.max_boundary_len, self.max_prompt_len)))


def _reused(build: Callable[P, R]) -> Callable[P, R]:
    """Build each strategy once per distinct arguments and hand back the same object after.

    ``cases`` draws its parts by calling these builders inside composites, i.e. once per
    example; a fresh strategy object must be validated and have its recursive properties
    worked out again by Hypothesis before its first draw, which cost more than the draws.
    The strategies are the same either way, so the same seed draws the same cases.
    Unhashable arguments (a ``CaseSpace`` holding lists) just build a new strategy.
    """
    # Typed as ``build`` itself: ``reuse`` calls it only once the arguments proved hashable.
    cached = cast("Callable[P, R]", functools.lru_cache(maxsize=1024)(build))

    @functools.wraps(build)
    def reuse(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            hash((args, tuple(kwargs.items())))
        except TypeError:
            return build(*args, **kwargs)
        return cached(*args, **kwargs)

    return reuse


@_reused
def token_ids(space: CaseSpace) -> st.SearchStrategy[int]:
    """Token ids: any id, biased toward special ids and the vocabulary's edges; shrinks to 0."""
    edges = {0, 1, space.vocab_size - 2, space.vocab_size - 1}
    image = sorted({t for t in (space.image_token, space.image_open, space.image_close, *space.image_markers)
                    if t is not None})
    special = sorted({t for t in (*space.special_ids, *edges) if 0 <= t < space.vocab_size and t not in image})
    if not image:
        return st.one_of(st.integers(0, space.vocab_size - 1), st.sampled_from(special))
    # an image's tokens stand for an image: text never holds one (ids at or above each move up to skip it)
    return st.one_of(st.integers(0, space.vocab_size - 1 - len(image)).map(lambda t: _skipping(t, image)),
                     st.sampled_from(special))


def _skipping(token: int, skipped: list[int]) -> int:
    """The ``token``-th id that is not in ``skipped`` (sorted)."""
    for taken in skipped:
        token += token >= taken
    return token


@_reused
def lengths(space: CaseSpace, new_tokens: int = 1) -> st.SearchStrategy[int]:
    """Prompt lengths up to ``max_prompt_len``, plus the boundary lengths.

    One ``sampled_from`` over the sorted lengths, not a ``one_of``: a boundary length is
    then a single choice the shrinker can lower step by step toward 1.
    """
    ordinary = range(1, max(1, min(space.max_prompt_len, space.prompt_limit(new_tokens))) + 1)
    return st.sampled_from(sorted({*ordinary, *space.boundary_lengths(new_tokens)}))


@_reused
@st.composite
def prompts(draw: st.DrawFn, space: CaseSpace, new_tokens: int = 1, min_length: int = 1) -> tuple[int, ...]:
    """One prompt: random ids, or a run of one repeated id."""
    # drawn here, not through prompts_of: a nested composite would change the shape of the choices Hypothesis
    # shrinks, and with it the minimal cases of stored runs
    n = max(min_length, draw(lengths(space, new_tokens)))
    if draw(st.booleans()):
        return (draw(token_ids(space)),) * n
    return tuple(draw(st.lists(token_ids(space), min_size=n, max_size=n)))


@_reused
@st.composite
def prompts_of(draw: st.DrawFn, space: CaseSpace, length: int) -> tuple[int, ...]:
    """One prompt of ``length`` tokens: random ids, or a run of one repeated id."""
    if draw(st.booleans()):
        return (draw(token_ids(space)),) * length
    return tuple(draw(st.lists(token_ids(space), min_size=length, max_size=length)))


@_reused
def batches(space: CaseSpace, new_tokens: int = 1, min_size: int = 1,
            min_length: int = 1) -> st.SearchStrategy[list[tuple[int, ...]]]:
    """Ragged batches of prompts (rows may differ in length); for a vision-language model, each row with its
    images drawn beside its text (so shrinking drops a row with its images)."""
    rows = prompts(space, new_tokens, min_length) if space.image_token is None else \
        prompts_with_images(space, new_tokens, min_length)
    return st.lists(rows, min_size=min_size, max_size=max(min_size, space.max_batch))


@_reused
@st.composite
def prompts_with_images(draw: st.DrawFn, space: CaseSpace, new_tokens: int = 1, min_length: int = 1) -> tuple[int, ...]:
    """One prompt of a vision-language model: its text, then where its images go (:func:`with_images`)."""
    return draw(with_images(space, draw(prompts(space, new_tokens, min_length))))


@_reused
def padding_sides(space: CaseSpace) -> st.SearchStrategy[str]:
    return st.sampled_from(space.padding_sides)


@_reused
def cache_implementations(space: CaseSpace) -> st.SearchStrategy[str]:
    return st.sampled_from(space.caches)


@_reused
def new_token_counts(space: CaseSpace) -> st.SearchStrategy[int]:
    """How many tokens to generate, from 1 to ``max_new_tokens``."""
    return st.integers(1, max(1, space.max_new_tokens))


@_reused
@st.composite
def prefill_chunks(draw: st.DrawFn, length: int) -> tuple[int, ...]:
    """A split of ``length`` prompt positions into consecutive chunks (shrinks to one chunk)."""
    if length <= 1:
        return (length,)
    cuts = sorted(draw(st.sets(st.integers(1, length - 1), max_size=min(4, length - 1))))
    bounds = [0, *cuts, length]
    return tuple(b - a for a, b in zip(bounds, bounds[1:]))


_sampled_from = _reused(st.sampled_from)


@st.composite
def cases(draw: st.DrawFn, space: CaseSpace, *, min_batch: int = 1, chunked: bool = True, min_chunks: int = 1,
          padding: tuple[str, ...] | None = None, caches: tuple[str, ...] | None = None,
          reuse: bool = False, continued: bool = False) -> Case:
    """Whole cases; keyword arguments narrow the space to what an oracle needs.

    ``continued`` also draws the continuation (else decoding is greedy).
    Right-padded cases generate one token only: decoding after right padding leaves
    padding between prompt and new tokens, where index-based schemes (sliding windows,
    MPT's ALiBi) legitimately disagree with a lone prompt; transformers documents right
    padding as unsupported for generation. Prefill with right padding is fuzzed fully.
    """
    side = draw(_sampled_from(padding or space.padding_sides))
    drawn = draw(new_token_counts(space))  # drawn either way, so left padding stays the simpler case
    n_new = 1 if side == "right" else drawn
    if space.encoder_decoder:
        rows, encoder = draw(encoder_decoder_batches(space, n_new, min_batch, min_length=2 if min_chunks > 1 else 1))
    else:
        rows, encoder = draw(batches(space, n_new, min_batch, min_length=2 if min_chunks > 1 else 1)), []
    length = max(len(p) for p in rows)
    chunks = draw(prefill_chunks(length)) if chunked else (length,)
    if len(chunks) < min_chunks:
        chunks = (length - 1, 1)  # an oracle that needs chunks gets the simplest split
    if space.image_token is not None:
        chunks = whole_images(chunks, rows, side, space.image_token, min_chunks,
                              (space.image_open is not None, space.image_close is not None))
    cache = draw(_sampled_from(caches or space.caches))
    reuse_batch = 0
    if reuse:
        # A static cache fixes its batch size at first use, so only same-batch reuse is its contract.
        reuse_batch = len(rows) if cache == "static" else draw(st.integers(len(rows), len(rows) + space.max_batch))
    return Case(prompts=tuple(rows), padding_side=side, max_new_tokens=n_new, prefill_chunks=chunks,
                cache=cache, dtype=space.dtype, reuse_batch=reuse_batch,
                continuation=draw(continuations(space, len(rows), n_new)) if continued else (), encoder=tuple(encoder))


@_reused
@st.composite
def encoder_decoder_batches(draw: st.DrawFn, space: CaseSpace, new_tokens: int = 1, min_size: int = 1,
                            min_length: int = 1) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """An encoder-decoder batch: (decoder prompts, all of one length, as generate() feeds a batch of them, each
    starting with the model's decoder start token where it has one, as generate() starts them; each row's encoder
    input, rows of any length: padded). Shrinks to one row of a one-token encoder input and a decoder prompt of
    the start token alone."""
    encoder = draw(batches(space, 1, min_size))
    length = max(min_length, draw(lengths(space, new_tokens)))
    start = () if space.decoder_start is None else (space.decoder_start,)
    return [start + draw(prompts_of(space, length - len(start))) if length > len(start) else start
            for _ in encoder], encoder


@_reused
@st.composite
def with_images(draw: st.DrawFn, space: CaseSpace, text: tuple[int, ...]) -> tuple[int, ...]:
    """``text`` with up to ``space.max_images`` images placed before any of its tokens or after the last: each a run
    of the model's image token, never two side by side. Shrinks to the text alone."""
    assert space.image_token is not None  # only drawn for a vision-language model
    places = sorted(draw(st.sets(st.integers(0, len(text)), max_size=space.max_images)))
    image = wrapped_image(space.image_token, space.image_tokens, space.image_open, space.image_close)
    row: tuple[int, ...] = ()
    last = 0
    for place in places:
        row += text[last:place] + image
        last = place
    return row + text[last:]


def image_spans(row: tuple[int, ...], image_token: int, offset: int = 0) -> list[tuple[int, int]]:
    """(start, end) of each image's run of ``image_token`` in ``row``, shifted by ``offset``."""
    spans: list[tuple[int, int]] = []
    for position, token in enumerate(row):
        if token != image_token:
            continue
        if spans and spans[-1][1] == offset + position:
            spans[-1] = (spans[-1][0], offset + position + 1)
        else:
            spans.append((offset + position, offset + position + 1))
    return spans


def whole_images(chunks: tuple[int, ...], rows: list[tuple[int, ...]], side: str, image_token: int,
                 min_chunks: int = 1, wrapped: tuple[bool, bool] = (False, False)) -> tuple[int, ...]:
    """``chunks`` without the cuts that would split an image in any row of the padded batch: its run, and the
    tokens that wrap it where the model has them (``wrapped``: an opening, a closing token); an image is fed whole,
    in the chunk that holds it, as a model's forward takes its pixel values (Ovis 2.5 counts an image's wrapping
    tokens in the call that feeds it). A cut at an image's edge stays (an image first in a later chunk, after a
    cached prefix). Where that leaves fewer than ``min_chunks`` chunks, the last cut that splits no image is
    taken."""
    length = max(map(len, rows))
    spans = [(start - wrapped[0], end + wrapped[1]) for row in rows
             for start, end in image_spans(row, image_token, length - len(row) if side == "left" else 0)]

    def whole(cut: int) -> bool:
        return not any(a < cut < b for a, b in spans)

    cuts = [cut for cut in itertools.accumulate(chunks[:-1]) if whole(cut)]
    if len(cuts) + 1 < min_chunks:
        cuts = [max(cut for cut in range(1, length) if whole(cut))]
    return tuple(b - a for a, b in zip([0, *cuts], [*cuts, length]))


def continuations(space: CaseSpace, rows: int, new_tokens: int) -> st.SearchStrategy[tuple[tuple[int, ...], ...]]:
    """The tokens fed after the prompts: greedy decoding (``()``, the simpler case Hypothesis shrinks to), or
    ``new_tokens`` drawn tokens per row, fed one at a time through the cache."""
    drawn = st.tuples(*[st.tuples(*[token_ids(space)] * new_tokens)] * rows)
    return st.one_of(st.just(()), drawn)


# The cache surfaces' settings (``Case.settings``), drawn after the case they apply to.

# What a prefix cache goes through before it is continued (the ``prefix-reuse`` oracle). A static cache keeps
# the batch it was built for: transformers' StaticLayer has no batch_select_indices, so "select" is dynamic only.
# "chunked-generate" is generate(prefill_chunk_size=the prefix's length), checked against the uncached forward.
PREFIX_OPERATIONS = ("copy", "crop", "select", "reorder", "chunked-generate")
STATIC_PREFIX_OPERATIONS = ("copy", "crop", "reorder", "chunked-generate")
# transformers refuses pages of fewer than 4 tokens ("page_size must be at least 4"); 256 is its default.
PAGE_SIZES = (4, 5, 8, 16, 32, 256)


def with_settings(base: st.SearchStrategy[Case],
                  knobs: Callable[[Case], st.SearchStrategy[dict[str, Any]]]) -> st.SearchStrategy[Case]:
    """Cases of ``base`` with the surface settings ``knobs(case)`` draws for each."""

    @st.composite
    def drawn(draw: st.DrawFn) -> Case:
        case = draw(base)
        return replace(case, settings=tuple(sorted(draw(knobs(case)).items())))

    return drawn()


def generate_settings(space: CaseSpace) -> Callable[[Case], st.SearchStrategy[dict[str, Any]]]:
    """The ``cache_implementation`` generate() is called with (shrinks to the first: "default", none passed);
    nothing where the library's generate() takes no such choice."""
    drawn = (_sampled_from(space.generate_caches).map(lambda name: {"cache_implementation": name})
             if space.generate_caches else st.just({}))
    return lambda case: drawn


def padding_settings(space: CaseSpace) -> Callable[[Case], st.SearchStrategy[dict[str, Any]]]:
    """How a padded case tells the model its padding (shrinks to the first mode); nothing for an unpadded case or
    where the backend has one way only."""
    drawn = (_sampled_from(space.padding_modes).map(lambda mode: {PADDING_MODE: mode})
             if space.padding_modes else st.just({}))
    return lambda case: drawn if case.padded else st.just({})


def beam_settings(case: Case) -> st.SearchStrategy[dict[str, Any]]:
    """Beam width 2-4 and how many of the beams generate() returns (shrinks to 2 beams, 1 returned)."""
    return st.integers(2, 4).flatmap(lambda beams: st.fixed_dictionaries(
        {"num_beams": st.just(beams), "num_return_sequences": st.integers(1, beams)}))


DRAFTERS = ("draft", "prompt-lookup")


def assisted_settings(case: Case) -> st.SearchStrategy[dict[str, Any]]:
    """Who drafts (a perturbed copy of the model, or prompt lookup) and how many tokens per window."""
    return st.fixed_dictionaries({"drafter": _sampled_from(DRAFTERS), "draft_tokens": st.integers(1, 5)})


def prefix_settings(case: Case) -> st.SearchStrategy[dict[str, Any]]:
    """The cache operation a prefix goes through (shrinks to a deep copy)."""
    operations = STATIC_PREFIX_OPERATIONS if case.cache == "static" else PREFIX_OPERATIONS
    return _sampled_from(operations).map(
        lambda operation: {"operation": operation, "prefill_chunk_size": case.prefill_chunks[0]}
        if operation == "chunked-generate" else {"operation": operation})


@st.composite
def paged_settings(draw: st.DrawFn, case: Case) -> dict[str, Any]:
    """A paged cache and its scheduler: page size, blocks from just enough for the longest request alone
    (scarce: requests queue or are evicted) to enough for all, tokens and requests per batch, block sharing."""
    page = draw(_sampled_from(PAGE_SIZES))
    pages = [-(-(len(p) + case.max_new_tokens) // page) for p in case.prompts]
    return {"page_size": page, "num_blocks": draw(st.integers(max(pages), sum(pages) + 4)),
            "max_batch_tokens": draw(st.integers(1, 64)),
            "max_requests_per_batch": draw(st.integers(1, case.batch_size)),
            "block_sharing": draw(st.booleans())}


def equal_lengths(case: Case) -> Case:
    """``case`` with every row cut to the shortest row's length (no padding), its chunks cut to fit: a quantized
    cache counts padding toward its residual length, so a padded row is quantized on another schedule than the
    row alone would be."""
    length = min(map(len, case.prompts))
    chunks: list[int] = []
    for size in case.prefill_chunks:
        if sum(chunks) < length:
            chunks.append(min(size, length - sum(chunks)))
    if len(chunks) < len(case.prefill_chunks) and len(chunks) < 2 <= length:
        chunks = [length - 1, 1]  # keep the split the oracle asked for
    return replace(case, prompts=tuple(p[:length] for p in case.prompts), prefill_chunks=tuple(chunks))


def encoder_decoder_case(case: Case, encoder: tuple[tuple[int, ...], ...], start: int | None) -> Case:
    """``case``'s decoder prompts cut to one length (:func:`equal_lengths`), each starting with the decoder start
    token ``start`` where there is one, attending to ``encoder`` (one row each): a fixed case for an
    encoder-decoder model, shaped as :func:`encoder_decoder_batches` draws them."""
    case = equal_lengths(case)
    first = () if start is None else (start,)
    return replace(case, prompts=tuple(first + p[len(first):] for p in case.prompts), encoder=encoder)


@st.composite
def shared_prefixes(draw: st.DrawFn, base: st.SearchStrategy[Case]) -> Case:
    """Cases of ``base`` whose rows may start with the first row's first tokens (a prefix a paged cache can
    share between requests); shrinks to no shared prefix."""
    case = draw(base)
    first = case.prompts[0]
    shared = draw(st.integers(0, len(first)))
    if not shared or case.batch_size == 1:
        return case
    rows = (first, *(first[:min(shared, len(row))] + row[min(shared, len(row)):] for row in case.prompts[1:]))
    return replace(case, prompts=rows, prefill_chunks=(max(map(len, rows)),))


GROUP_SIZES = (16, 8, 32, 64, 128)
# What a quantized cache goes through besides the plain cached path: nothing, a deep copy of a prefix, a beam
# reorder, a batch selection, or the library's generate(cache_implementation="quantized").
QUANTIZED_OPERATIONS = ("none", "copy", "reorder", "select", "generate")


def quantized_settings(space: CaseSpace) -> Callable[[Case], st.SearchStrategy[dict[str, Any]]]:
    """A quantized cache for each case: backend, bits, axes, a group size that divides the heads' width (the
    model's sizes make any other invalid), a residual length from 1 (quantize after every token) to past the
    case's length (never quantize), and the operation it goes through."""
    groups = tuple(g for g in GROUP_SIZES if space.head_dim and space.head_dim % g == 0) or (space.head_dim or 16,)

    @st.composite
    def knobs(draw: st.DrawFn, case: Case) -> dict[str, Any]:
        backend = draw(_sampled_from(space.quantizers))
        drawn: dict[str, Any] = {"quantizer": backend, "operation": draw(_sampled_from(QUANTIZED_OPERATIONS))}
        bits, axes = QUANTIZER_OPTIONS[backend]
        if bits:
            drawn.update(nbits=draw(_sampled_from(bits)), axis_key=draw(_sampled_from(axes)),
                         axis_value=draw(_sampled_from(axes)), q_group_size=draw(_sampled_from(groups)),
                         residual_length=draw(st.integers(1, case.total_length + 1)))
        return drawn

    return knobs
