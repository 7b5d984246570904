"""The continuous-batching oracle: each prompt as a request through the library's continuous batching
(a paged cache shared by requests scheduled into common batches) against one uncached forward.

The library returns the generated tokens and their log-probs, not whole logits, so the two comparisons are
over one number per position: the uncached log-prob of the best token vs of the token it chose (greedy
decoding picked a token the uncached model ranks lower only past rounding), and the log-prob it returned vs
the uncached one.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import CONTINUOUS_BATCHING
from fuzzkv.oracles.interface import Comparison, Oracle, run_path, teacher_forced
from fuzzkv.strategies import cases, paged_settings, shared_prefixes, with_settings

if TYPE_CHECKING:
    import torch

    from fuzzkv.backends.interface import Backend, Trace


def _continuous_batching(backend: Backend, case: Case) -> list[Comparison]:
    batched = run_path("continuous batching", backend.continuous_batched, case)
    uncached = teacher_forced(backend, batched).logits.double().log_softmax(-1)
    chosen = uncached.gather(-1, batched.tokens[:, 1:, None].to(uncached.device))
    best = uncached.amax(-1, keepdim=True)

    def trace(values: torch.Tensor) -> Trace:
        return replace(batched, logits=values)

    return [Comparison("greedy token: best vs chosen (uncached log-probs)", trace(best), trace(chosen)),
            Comparison("log-probs: continuous batching vs uncached", trace(chosen), batched)]


CONTINUOUS: Oracle[Backend] = Oracle(
    "continuous-batching", "each prompt as a request through continuous batching (paged cache, drawn pages, "
    "blocks and batch limits) vs the uncached forward: greedy tokens and log-probs",
    lambda s: with_settings(shared_prefixes(cases(s, chunked=False, padding=("left",), caches=("dynamic",))),
                            paged_settings), _continuous_batching, needs=frozenset({CONTINUOUS_BATCHING}),
    default=False, script='''
tokens, mask, logprobs = continuous_batching(subject, CASE, PAD, DEVICE)
prompt_length = max(len(p) for p in CASE["prompts"])
uncached = teacher_forced(subject, tokens, mask, prompt_length).double().log_softmax(-1)
chosen = uncached.gather(-1, tokens[:, prompt_length:, None])
everywhere = torch.ones(chosen.shape[:2], dtype=torch.bool)
report("greedy token: best vs chosen (uncached log-probs)", uncached.amax(-1, keepdim=True), chosen, everywhere)
report("log-probs: continuous batching vs uncached", chosen, logprobs.unsqueeze(-1), everywhere)
''')
