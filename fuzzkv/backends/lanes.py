"""The two kinds of lane: one backend, or a pair compared by the ``cross`` oracle.

Everything that differs between them lives here, not in the runner: how the tolerance is
settled (a pair adds both sides' rounding noise), how a failure is localised (a pair is
compared layer by layer across implementations), and which script reproduces it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fuzzkv import diagnosis
from fuzzkv.backends.drivers import cross_lane_name
from fuzzkv.backends.interface import Backend, Lane, Measure, Pair, Scripted
from fuzzkv.case import Case
from fuzzkv.verdict import Bounds, Tolerance, Verdict, summed


class BackendLane(Lane[Backend]):
    """An oracle runs on one backend: cached vs uncached within one implementation."""

    def __init__(self, backend: Backend):
        self.backend, self.name, self.info = backend, backend.name, backend.info
        self.capabilities, self.backends = backend.capabilities, (backend,)

    @property
    def subject(self) -> Backend:
        return self.backend

    def tolerance(self, measure: Measure) -> Tolerance:
        return measure(self.backend)

    def diagnose(self, verdict: Verdict, threshold: float) -> dict[str, Any]:
        return diagnosis.cached_vs_uncached(self.backend, verdict.case, None, threshold)

    def reproduction(self, oracle: Scripted, case: Case, bounds: Bounds) -> str:
        return self.backend.reproduction(oracle.name, oracle.script_for(case), case, bounds)

    def precise_subject(self) -> Backend | None:
        return self.backend.precise_view()

    def release_precise(self) -> None:
        self.backend.release_precise()

    def canary(self, kind: str, logit_scale: float) -> Lane[Backend] | None:
        planted = self.backend.mutant(kind, logit_scale)
        return BackendLane(planted) if planted is not None else None


class CrossLane(Lane[Pair]):
    """``candidate`` (TransformerLens, torchtune) against ``reference`` (HF) on the same cases and weights.
    Cases keep to the lengths on which the candidate computes the reference's function (``agrees_up_to``)."""

    def __init__(self, reference: Backend, candidate: Backend):
        self.pair = Pair(reference, candidate)
        self.name = cross_lane_name(candidate.name)
        self.info, self.backends = reference.info, (reference, candidate)
        if candidate.agrees_up_to is not None:
            length = candidate.agrees_up_to[0]
            self.info = replace(reference.info, max_positions=min(length, reference.info.max_positions or length))
        self.capabilities = reference.capabilities.both(candidate.capabilities)

    @property
    def subject(self) -> Pair:
        return self.pair

    def tolerance(self, measure: Measure) -> Tolerance:
        # Each side rounds on its own: the two can differ by both sides' noise.
        return summed(measure(self.pair.reference), measure(self.pair.candidate),
                      f"{self.pair.reference.name} + {self.pair.candidate.name}")

    def diagnose(self, verdict: Verdict, threshold: float) -> dict[str, Any]:
        cached = self.pair.reference.cached(verdict.case)
        return diagnosis.across_backends(self.pair.reference, self.pair.candidate, cached.tokens,
                                         cached.attention_mask, threshold)

    def reproduction(self, oracle: Scripted, case: Case, bounds: Bounds) -> str:
        # The candidate's script builds the reference model too: it is what the candidate is built from.
        return self.pair.candidate.reproduction(oracle.name, oracle.script_for(case), case, bounds)
