"""The fixed cases calibration measures on: shaped like the search's, so their spread is the search's.

The run's tolerance (:mod:`fuzzkv.tolerance`) and the lossy surfaces' per-setting bounds
(:mod:`fuzzkv.oracles.quantized`) both measure on them.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.strategies import encoder_decoder_case

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace

# Measured on clean models (docs/explanation/tolerances.md): over 100+ search cases per oracle, the largest
# cached-vs-uncached difference stayed within 2.4x the largest one over the calibration cases.
SAFETY_FACTOR = 4.0


def calibration_cases(backend: Backend, dtype: str, *, max_prompt_len: int = 16, max_new_tokens: int = 8,
                      seed: int = 0) -> list[Case]:
    """A fixed set of cases shaped like the search's: the longest lengths it draws (rounding grows with
    length) alone and in a ragged left-padded batch, a prompt fed in two chunks, and short batches."""
    rng = random.Random(seed)
    info, capabilities = backend.info, backend.capabilities
    limit = (info.max_positions or 10**9) - max_new_tokens
    longest = max(2, min(max_prompt_len, limit))
    tokens = [t for t in range(info.vocab_size) if t not in info.image_ids]  # these stand for an image
    most = min(3, capabilities.max_batch or 3)

    def prompt(length: int) -> tuple[int, ...]:
        return tuple(rng.choice(tokens) for _ in range(max(1, length)))

    short = prompt(1)
    # The special tokens of trained weights only: in random weights they are tokens like any other, and the cases
    # below already hold one-token prompts (a full-size vocabulary makes each case cost seconds on a CPU).
    specials = () if info.random_weights else tuple(t for t in info.special_ids if t not in info.image_ids)[:3]
    # Kernels are chosen by shape, and their rounding with them: short batches round differently.
    cases = [Case(prompts=(prompt(longest),), max_new_tokens=max_new_tokens, dtype=dtype),
            Case(prompts=tuple(prompt(longest - 3 * row) for row in range(most)), max_new_tokens=max_new_tokens,
                 dtype=dtype),
            Case(prompts=(prompt(longest // 2 + 1),), max_new_tokens=max_new_tokens,
                 prefill_chunks=(1, longest // 2), dtype=dtype),
            Case(prompts=(short,) * most, max_new_tokens=max_new_tokens, dtype=dtype),
            Case(prompts=tuple(prompt(2 + row) for row in range(most)), max_new_tokens=2, dtype=dtype),
            # Drawn continuations, fed one at a time: tokens greedy decoding of a random model never picks.
            Case(prompts=tuple(prompt(longest - 3 * row) for row in range(most)), max_new_tokens=max_new_tokens,
                 dtype=dtype, continuation=tuple(prompt(max_new_tokens) for _ in range(most))),
            # The shapes shrinking ends in: one token, two new ones, alone and twice; and the special
            # tokens the search draws, whose trained activations can be far larger than others'.
            Case(prompts=(short,), max_new_tokens=2, dtype=dtype),
            Case(prompts=(short,) * min(2, most), max_new_tokens=2, dtype=dtype),
            *(Case(prompts=((special,),) * rows, max_new_tokens=2, dtype=dtype)
              for special in specials for rows in sorted({1, min(2, most)})),
            *(Case(prompts=((special, special),), max_new_tokens=2, dtype=dtype) for special in specials)]
    if info.image_token_id is not None:  # a vision-language model: the longest shapes again, with an image each
        image = info.image_layout
        cases += [replace(case, prompts=tuple(p[:1] + image + p[1:] for p in case.prompts), prefill_chunks=())
                  for case in cases[:2]]
    if not info.encoder_decoder:
        return cases
    # An encoder-decoder model: the same decoder shapes, cut to one length per batch as the search draws them,
    # each row attending to encoder inputs of the longest length and shorter ones (padded).
    return [encoder_decoder_case(case, tuple(prompt(longest - 3 * row) for row in range(case.batch_size)),
                                 info.decoder_start_id) for case in cases]


def differences(reference: Trace, candidate: Trace) -> tuple[float, float]:
    """The largest |logit difference| and the largest RMS difference over the vocabulary, at the positions both
    traces checked (NaN in one only counts as infinite)."""
    diff = (reference.logits.double() - candidate.logits.double()).nan_to_num(nan=float("inf"))
    checked = reference.checked & candidate.checked
    largest = diff.abs().amax(-1).masked_fill(~checked, 0.0)
    rms = diff.pow(2).mean(-1).sqrt().masked_fill(~checked, 0.0)
    return float(largest.max()), float(rms.max())
