"""The compiled oracle's paths: the library's generate() with its decoding steps compiled by ``torch.compile`` on a
static cache, against one uncached forward (eager) over the tokens it generated."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, against_uncached, single


def _compiled(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    return against_uncached(backend, "compiled generate (torch.compile, static cache)", backend.compiled, case)


PAIRS: dict[str, Pairs] = {"compiled": single("compiled generate vs uncached", _compiled)}
