"""The beam-search oracle's paths: the library's beam search, whose cache is reordered as beams are kept and
dropped, against one uncached forward over each sequence it returns."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, run_path, single, teacher_forced


def _beam(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    # Teacher-forcing the returned sequences checks every step's logits, where comparing with a second beam
    # search without a cache could only compare the winners, and would flip on near-ties.
    searched = run_path("beam search", backend.beam, case)
    return teacher_forced(backend, searched), searched


PAIRS: dict[str, Pairs] = {"beam": single("beam search vs uncached", _beam)}
