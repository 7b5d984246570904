"""The continuous-batching oracle's paths: each prompt as a request through the library's continuous batching
(a paged cache shared by requests scheduled into common batches) against one uncached forward.

The library returns the generated tokens and their log-probs, not whole logits, so the two comparisons are
over one number per position: the uncached log-prob of the best token vs of the token it chose (greedy
decoding picked a token the uncached model ranks lower only past rounding), and the log-prob it returned vs
the uncached one.
"""

from __future__ import annotations

import torch

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Comparison, Pairs, run_path, teacher_forced


def _continuous_batching(backend: Backend, case: Case) -> list[Comparison]:
    batched = run_path("continuous batching", backend.continuous_batched, case)
    uncached = teacher_forced(backend, batched).logits.double().log_softmax(-1)
    chosen = uncached.gather(-1, batched.tokens[:, 1:, None].to(uncached.device))
    best = uncached.amax(-1, keepdim=True)

    def trace(values: torch.Tensor) -> Trace:
        return Trace(batched.tokens, batched.attention_mask, values, batched.checked)

    return [Comparison("greedy token: best vs chosen (uncached log-probs)", trace(best), trace(chosen)),
            Comparison("log-probs: continuous batching vs uncached", trace(chosen), batched)]


PAIRS: dict[str, Pairs] = {"continuous-batching": _continuous_batching}
