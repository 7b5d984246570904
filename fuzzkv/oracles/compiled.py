"""The compiled oracle's paths: the library's generate() with its decoding steps compiled by ``torch.compile`` on a
static cache, against one uncached forward (eager) over the tokens it generated."""

from __future__ import annotations

from fuzzkv.backends.interface import Backend, Trace
from fuzzkv.case import Case
from fuzzkv.oracles.check import Pairs, run_path, single, teacher_forced


def _compiled(backend: Backend, case: Case) -> tuple[Trace, Trace]:
    generated = run_path("compiled generate (torch.compile, static cache)", backend.compiled, case)
    return teacher_forced(backend, generated), generated


PAIRS: dict[str, Pairs] = {"compiled": single("compiled generate vs uncached", _compiled)}
