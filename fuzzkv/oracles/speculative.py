"""The assisted-decoding oracle: the library's generate() with a draft model (or prompt lookup), whose rejected
guesses crop the target's cache back, against one uncached forward over the tokens it generated."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import ASSISTED_DECODING
from fuzzkv.oracles.interface import Oracle, against_uncached, single
from fuzzkv.strategies import assisted_settings, cases, with_settings

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace


def _assisted(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    return against_uncached(backend, f"assisted generate ({case.setting('drafter')})", backend.assisted, case)


# transformers documents assisted generation for batch size 1 only ("assisted generate is only supported for
# batch_size = 1").
ASSISTED: Oracle[Backend] = Oracle(
    "assisted", "assisted decoding (a draft that is often rejected, or prompt lookup) vs the uncached forward "
    "over the tokens it generated", lambda s: with_settings(
        cases(replace(s, max_batch=1), chunked=False, padding=("left",)), assisted_settings),
    single("assisted vs uncached", _assisted), needs=frozenset({ASSISTED_DECODING}), default=False, script='''
sequences, mask, steps = assisted(subject, CASE, PAD, DEVICE, draft_model(subject), GENERATE_CACHE)
report_generated("assisted vs uncached", sequences, mask, steps)
''')
