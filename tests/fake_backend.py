"""The FAKE backend: a test double for fuzzkv's own machinery (runner, search, store, replay, reports).

It is not a model and not a library. Its "model" is a few seeded random tensors: the key of a token is its
embedding plus a sinusoidal encoding of its position, the hidden state at a position is the mean of the keys of
the real (unpadded) tokens up to it, and the logits are that mean times an unembedding. The uncached reference
computes the means with running sums; the cached path keeps every key in a cache and averages it with a weight
matrix, so the two agree to float rounding when clean, as a real model's paths do.

Bugs are planted by name (:data:`BUGS`), each only where a real cache bug of its kind shows. Its name is "fake"
and no ``--backend`` value reaches it: tests build it themselves (:func:`fake_lanes`) and add it to the oracle
catalogue for their duration (:func:`fake_in_catalogue`). It imports no model library.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import torch

from fuzzkv import canaries
from fuzzkv.backends.interface import Backend, Capabilities, Lanes, ModelInfo, Trace, Unsupported
from fuzzkv.backends.lanes import BackendLane
from fuzzkv.case import Case
from fuzzkv.features import CACHE_RESET, PADDED_POSITIONS
from fuzzkv.oracles import ORACLES, core
from fuzzkv.verdict import Bounds

NAME = "fake"
VOCAB, PAD_ID, SPECIAL_IDS = 32, 0, (0, 1, 2)  # pad, bos, eos
FREQUENCIES = (1.0, 0.1, 0.01, 0.001)  # of the sinusoidal position encoding: a key is 2 x 4 = 8 wide
WIDTH = 2 * len(FREQUENCIES)
LONG_SEQUENCE = 8  # "past-long-sequence": a cached step breaks once the cache holds this many tokens
# "logit-offset-5pct" moves cached steps' logits by this share of the logit scale (as fuzzkv.backends.mutants,
# which imports transformers).
OFFSET_FRACTION = 0.05
WARM_UP = 3  # "warming-up": this many path calls go wrong (a finding, its repeat and its precise re-check), then none
SOMETIMES = 0.3  # "sometimes-wrong": the share of path calls that go wrong, drawn from a seeded generator

# Each planted bug: what goes wrong, in words. Those named as fuzzkv.canaries.KINDS are the canaries' too.
BUGS = {
    "positions-off-by-one": "cached steps use positions one too far (a RoPE offset bug)",
    "cached-key-dropped": "cached steps cannot attend to the first cached token",
    "row-mask-ignored": "cached steps attend to padding (the padding mask is dropped)",
    "logit-offset-5pct": "cached steps' logits move by 5% of the logit scale",
    "batch-of-three": "cached steps of a batch of three or more rows use positions one too far",
    "past-long-sequence": f"cached steps wrap positions once the cache holds {LONG_SEQUENCE} tokens",
    "stale-after-reset": "reset() zeroes the cached keys but keeps their slots, which later steps still attend to",
    "warming-up": f"non-deterministic: the first {WARM_UP} calls of a path with cached steps use positions one too far",
    "sometimes-wrong": f"non-deterministic: a random {SOMETIMES:.0%} of the calls of a path with cached steps use "
                       "positions one too far",
    "nan-logits": "every path returns NaN logits",
    "hangs-when-cached": "a cached step of a batch of two or more rows never returns",
}
CAPABILITIES = Capabilities(caches=("dynamic",), features=frozenset({PADDED_POSITIONS, CACHE_RESET}), dtypes=("float32",))


@dataclass(frozen=True)
class Weights:
    """The fake model: a token embedding [VOCAB, WIDTH] and an unembedding [WIDTH, VOCAB]."""

    embedding: torch.Tensor
    unembedding: torch.Tensor

    @classmethod
    def seeded(cls, seed: int) -> Weights:
        generator = torch.Generator().manual_seed(seed)
        return cls(torch.randn(VOCAB, WIDTH, generator=generator, dtype=torch.float64),
                   torch.randn(WIDTH, VOCAB, generator=generator, dtype=torch.float64))

    def to(self, dtype: torch.dtype) -> Weights:
        return Weights(self.embedding.to(dtype), self.unembedding.to(dtype))

    def keys(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """[B, n] tokens at [B, n] positions -> [B, n, WIDTH] keys."""
        angles = positions.to(self.embedding.dtype).unsqueeze(-1) * torch.tensor(FREQUENCIES, dtype=self.embedding.dtype)
        return self.embedding[tokens] + torch.cat([angles.sin(), angles.cos()], -1)


@dataclass
class WarmUp:
    """How many more path calls the "warming-up" bug breaks, and the draws of the "sometimes-wrong" one: one state
    shared by a backend and its precise view, as a process's state would be."""

    calls_left: int = WARM_UP
    draws: random.Random = field(default_factory=lambda: random.Random(0))  # seeded: a test sees the same calls


class FakeCache:
    """What the cached path keeps between steps: each slot's key [B, S, WIDTH], and whether it is attended [B, S]."""

    def __init__(self) -> None:
        self.keys, self.attended = torch.zeros(0, 0, WIDTH), torch.zeros(0, 0, dtype=torch.bool)

    def __len__(self) -> int:
        return self.keys.shape[1]

    def append(self, keys: torch.Tensor, attended: torch.Tensor) -> None:
        rows = keys.shape[0]
        if len(self) == 0:
            self.keys, self.attended = keys, attended
            return
        # A cache that served a bigger batch serves the first rows of it (only a stale one has any left).
        self.keys = torch.cat([self.keys[:rows].to(keys.dtype), keys], 1)
        self.attended = torch.cat([self.attended[:rows], attended], 1)

    def reset(self, stale: bool) -> None:
        if stale:
            self.keys = torch.zeros_like(self.keys)  # the bug: the slots stay, and stay attended
        else:
            self.keys, self.attended = torch.zeros(0, 0, WIDTH), torch.zeros(0, 0, dtype=torch.bool)


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so padding never shifts a position (as fuzzkv's HF paths do)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class FakeBackend(Backend):
    """The fake model behind the Backend interface, with the planted ``bugs`` (names of :data:`BUGS`)."""

    name = NAME
    capabilities = CAPABILITIES

    def __init__(self, bugs: tuple[str, ...] | frozenset[str] = (), *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 logit_scale: float = 1.0, warm_up: WarmUp | None = None):
        unknown = set(bugs) - set(BUGS)
        if unknown:
            raise ValueError(f"no such fake bug: {', '.join(sorted(unknown))}")
        self.bugs, self.seed, self.dtype, self.logit_scale = frozenset(bugs), seed, dtype, logit_scale
        self.weights = Weights.seeded(seed).to(dtype)
        self.warm_up = warm_up or WarmUp()
        planted = "; ".join(f"{bug}: {BUGS[bug]}" for bug in sorted(self.bugs)) or "none"
        self.info = ModelInfo(name=NAME, architecture="FakeRunningMean", vocab_size=VOCAB, special_ids=SPECIAL_IDS,
                              max_positions=None, sliding_windows=(), model_type=NAME,
                              source=f"the fake backend (tests/fake_backend.py), a test double for fuzzkv itself, not a "
                                     f"model; planted bugs: {planted}")

    # -- the paths the oracles compare ------------------------------------------------------------------------------
    def cached(self, case: Case, tokens: torch.Tensor | None = None, *, cache: str | None = None,
               chunks: tuple[int, ...] | None = None, precise: bool = False) -> Trace:
        if (cache or case.cache) not in self.capabilities.caches:
            raise Unsupported(f"the fake backend has no {cache or case.cache} cache")
        backend = self._precise() if precise else self
        return Trace.everywhere(*backend._decode(case, tokens, chunks or case.prefill_chunks, FakeCache()))

    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, precise: bool = False) -> torch.Tensor:
        weights = self.weights.to(torch.float64) if precise else self.weights
        inputs, mask = tokens[:, :-1], attention_mask[:, :-1]
        real = mask.to(weights.embedding.dtype).unsqueeze(-1)
        means = (weights.keys(inputs, positions_from_mask(mask)) * real).cumsum(1) / real.cumsum(1).clamp(min=1)
        return self._finish(means @ weights.unembedding).double()

    def generate(self, case: Case) -> Trace:
        """Greedy decoding through the cache, the whole prompt in one prefill: the fake's own generate()."""
        tokens, mask, logits = self._decode(replace(case, continuation=()), None, (case.padded_length,), FakeCache())
        steps = [logits[:, case.padded_length - 1 + i] for i in range(case.max_new_tokens)]
        return Trace.generated(tokens, mask, steps, case.padded_length)

    def reused(self, case: Case, tokens: torch.Tensor) -> Trace:
        """The cached path on a cache that first served ``case.reuse_batch`` rows, then was reset."""
        rows = tuple(case.prompts[i % case.batch_size] for i in range(max(case.reuse_batch, case.batch_size)))
        primer = replace(case, prompts=rows, prefill_chunks=(), continuation=())
        shared = FakeCache()
        self._decode(primer, None, primer.prefill_chunks, shared)
        shared.reset(stale="stale-after-reset" in self.bugs)
        return Trace.everywhere(*self._decode(case, tokens, case.prefill_chunks, shared))

    # -- what calibration, canaries and reports need ----------------------------------------------------------------
    def precise_view(self, attn: str | None = None) -> Backend | None:
        return self._precise() if attn is None else None  # one attention implementation only

    def _precise(self) -> FakeBackend:
        """This backend in float64, with the same bugs (a planted bug keeps its size there; rounding does not)."""
        return FakeBackend(self.bugs, seed=self.seed, dtype=torch.float64, logit_scale=self.logit_scale,
                           warm_up=self.warm_up)

    def mutant(self, kind: str, logit_scale: float) -> Backend | None:
        if kind not in canaries.KINDS:
            return None
        return FakeBackend(self.bugs | {kind}, seed=self.seed, dtype=self.dtype, logit_scale=logit_scale)

    def reproduction(self, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
        return REPRODUCTION.format(oracle=oracle, bugs=tuple(sorted(self.bugs)), case=case.to_json(),
                                   value=bounds.value, rms=bounds.rms)

    # -- the fake model ---------------------------------------------------------------------------------------------
    def _decode(self, case: Case, forced: torch.Tensor | None, chunks: tuple[int, ...],
                cache: FakeCache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefill the padded prompts in ``chunks``, then decode one token at a time: greedily, or feeding ``forced``
        (else the case's continuation). Returns (tokens [B, T], mask [B, T], logits [B, T-1, V])."""
        ids, mask = padded(case)
        length, total = ids.shape[1], mask.shape[1]
        if forced is None and case.continuation:
            forced = torch.cat([ids, torch.tensor(case.continuation, dtype=torch.long)], 1)
        tokens = forced.clone() if forced is not None else torch.cat([ids, torch.zeros_like(mask[:, length:])], 1)
        warming = self._warming(case, chunks)
        logits: list[torch.Tensor] = []
        start = 0
        for size in chunks:
            logits.append(self._step(cache, tokens, mask, start, start + size, warming))
            start += size
        for position in range(length, total):
            if forced is None:
                tokens[:, position] = logits[-1][:, -1].argmax(-1)
            if position < total - 1:
                logits.append(self._step(cache, tokens, mask, position, position + 1, warming))
        return tokens, mask, torch.cat(logits, 1)

    def _step(self, cache: FakeCache, tokens: torch.Tensor, mask: torch.Tensor, start: int, end: int,
              warming: bool) -> torch.Tensor:
        """One forward over ``tokens[:, start:end]`` with ``cache``: the new positions' logits [B, n, V]."""
        rows, past = tokens.shape[0], len(cache)
        positions = positions_from_mask(mask)[:, start:end]
        if past:  # the bugs of cached steps: what is wrong only when a cache is read
            if "hangs-when-cached" in self.bugs and rows >= 2:
                while True:
                    time.sleep(0.01)
            if "positions-off-by-one" in self.bugs or warming or ("batch-of-three" in self.bugs and rows >= 3):
                positions = positions + 1
            if "past-long-sequence" in self.bugs and past >= LONG_SEQUENCE:
                positions = positions - LONG_SEQUENCE
        cache.append(self.weights.keys(tokens[:, start:end], positions), mask[:, start:end].bool())
        attended = cache.attended.clone()
        if past and "row-mask-ignored" in self.bugs:
            attended[:] = True
        if past and "cached-key-dropped" in self.bugs:
            attended[:, 0] = False
        slots = torch.arange(len(cache))
        causal = slots[None, :] <= torch.arange(len(cache) - (end - start), len(cache))[:, None]  # [n, S]
        weights = (causal[None] & attended[:, None, :]).to(self.dtype)  # [B, n, S]
        means = (weights / weights.sum(-1, keepdim=True).clamp(min=1)) @ cache.keys
        logits = means @ self.weights.unembedding
        if past and "logit-offset-5pct" in self.bugs:
            logits = logits + OFFSET_FRACTION * self.logit_scale
        return self._finish(logits)

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.full_like(logits, float("nan")) if "nan-logits" in self.bugs else logits

    def _warming(self, case: Case, chunks: tuple[int, ...]) -> bool:
        """Whether the "warming-up" or "sometimes-wrong" bug breaks this path call (one with a cached step), counting it."""
        if len(chunks) < 2 and case.max_new_tokens < 2:
            return False  # no step reads the cache
        if "sometimes-wrong" in self.bugs:
            return self.warm_up.draws.random() < SOMETIMES
        if "warming-up" not in self.bugs or self.warm_up.calls_left <= 0:
            return False
        self.warm_up.calls_left -= 1
        return True


def padded(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts padded into ids [B, L], and the mask of the whole final sequence [B, L + new tokens]."""
    length = case.padded_length
    ids = torch.full((case.batch_size, length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((case.batch_size, case.total_length), dtype=torch.long)
    for row, prompt in enumerate(case.prompts):
        start = length - len(prompt) if case.padding_side == "left" else 0
        ids[row, start:start + len(prompt)] = torch.tensor(prompt)
        mask[row, start:start + len(prompt)] = 1
    mask[:, length:] = 1
    return ids, mask


REPRODUCTION = '''\
# fuzzkv reproduction on the FAKE backend: a test double for fuzzkv's own tests (tests/fake_backend.py), not a
# model and not a library. Run it from the root of the fuzzkv repository: it exits 1 while the case fails.
from fuzzkv.backends.lanes import BackendLane
from fuzzkv.case import Case
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from fuzzkv.verdict import Bounds
from tests.fake_backend import FakeBackend

lane = BackendLane(FakeBackend({bugs!r}))
verdict = check(ORACLES[{oracle!r}], lane, Case.from_json({case!r}), Bounds({value!r}, {rms!r}))
print(verdict.summary())
raise SystemExit(1 if verdict.failed else 0)
'''


def fake_lanes(*bugs: str, unsupported: dict[str, str] | None = None) -> Lanes:
    """The lanes a run drives on the fake backend with ``bugs`` planted (``unsupported``: lanes said to be missing)."""
    backend = FakeBackend(bugs)
    return Lanes(backend.info, {NAME: BackendLane(backend)}, dict(unsupported or {}),
                 f"{NAME} (a test double, not a model)")


# The oracles whose paths use only the Backend interface (the core family): the fake can be driven by those.
FAKE_ORACLES = tuple(oracle.name for oracle in (core.DECODE, core.BATCH, core.CHUNKED, core.CACHE_IMPL, core.CACHE_REUSE,
                                                 core.GENERATE, core.OFFLOADED))


@contextmanager
def fake_in_catalogue() -> Iterator[None]:
    """The catalogue names the lanes each oracle runs on (``Oracle.lanes``), and calibration finds a backend's
    oracles by its name there: within the block, the core oracles run on the "fake" lane too."""
    before = {name: ORACLES[name] for name in FAKE_ORACLES}
    ORACLES.update({name: replace(oracle, lanes=(*oracle.lanes, NAME)) for name, oracle in before.items()})
    try:
        yield
    finally:
        ORACLES.update(before)
