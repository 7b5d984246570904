"""The assisted-decoding oracle's paths: the library's generate() with a draft model (or prompt lookup), whose
rejected guesses crop the target's cache back, against one uncached forward over the tokens it generated."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, against_uncached, single


def _assisted(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    return against_uncached(backend, f"assisted generate ({case.setting('drafter')})", backend.assisted, case)


PAIRS: dict[str, Pairs] = {"assisted": single("assisted vs uncached", _assisted)}
