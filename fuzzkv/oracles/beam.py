"""The beam-search oracle: the library's beam search, whose cache is reordered as beams are kept and dropped,
against one uncached forward over each sequence it returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import BEAM_SEARCH
from fuzzkv.oracles.interface import Oracle, against_uncached, single
from fuzzkv.strategies import beam_settings, cases, with_settings

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace


def _beam(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    # Each returned sequence at the logits its beam was scored with (a second beam search without a cache could only
    # compare the winners).
    return against_uncached(backend, "beam search", backend.beam, case)


BEAM: Oracle[Backend] = Oracle(
    "beam", "beam search with a cache (reordered every step) vs the uncached forward over each returned sequence",
    lambda s: with_settings(cases(s, chunked=False, padding=("left",)), beam_settings),
    single("beam search vs uncached", _beam), needs=frozenset({BEAM_SEARCH}), default=False, script='''
sequences, mask, steps = beam_search(subject, CASE, PAD, DEVICE, GENERATE_CACHE)
report_generated("beam search vs uncached", sequences, mask, steps)
''')
