"""The compiled oracle: the library's generate() with its decoding steps compiled by ``torch.compile`` on a static
cache, against one uncached forward (eager) over the tokens it generated."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import COMPILED_DECODING, STATIC_CACHE
from fuzzkv.oracles.interface import Oracle, against_uncached, single
from fuzzkv.strategies import cases

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace


def _compiled(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    return against_uncached(backend, "compiled generate (torch.compile, static cache)", backend.compiled, case)


COMPILED: Oracle[Backend] = Oracle(
    "compiled", "the library's generate() with torch.compile'd decoding steps on a static cache vs the "
    "uncached forward over the tokens it generated",
    lambda s: cases(s, chunked=False, padding=("left",), caches=("static",)),
    single("compiled generate vs uncached", _compiled), needs=frozenset({STATIC_CACHE, COMPILED_DECODING}),
    default=False, default_on=("cuda",), script='''
sequences, mask, steps = compiled_generate(subject, CASE, PAD, DEVICE)
report_generated("compiled generate vs uncached", sequences, mask, steps)
''')
