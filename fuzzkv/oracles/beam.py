"""The beam-search oracle's paths: the library's beam search, whose cache is reordered as beams are kept and
dropped, against one uncached forward over each sequence it returns."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, against_uncached, single


def _beam(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    # Each returned sequence at the logits its beam was scored with (a second beam search without a cache could only
    # compare the winners).
    return against_uncached(backend, "beam search", backend.beam, case)


PAIRS: dict[str, Pairs] = {"beam": single("beam search vs uncached", _beam)}
