"""Every run proves it can see: planted cache bugs checked at the run's own tolerance.

After a lane's tolerance is settled, each canary kind (:data:`fuzzkv.backends.mutants.KINDS`:
positions off by one, a cached key dropped, a row's padding mask ignored, the logits of
cached steps moved by 5% of the logit scale) is planted in a copy of the lane's backend and
checked with the ``decode`` oracle on a fixed case. A canary that passes means this run could
not have seen that bug: the lane is blind, and the run never reports "clean". So is a lane
whose tolerance exceeds :data:`BLIND_FRACTION` of the logit scale.
"""

from __future__ import annotations

from dataclasses import dataclass

from fuzzkv.backends.interface import Lane, PathError
from fuzzkv.case import Case
from fuzzkv.comparison import compare
from fuzzkv.oracles.check import check_within
from fuzzkv.oracles.core import DECODE
from fuzzkv.strategies import encoder_decoder_case
from fuzzkv.tolerance import Progress
from fuzzkv.verdict import Tolerance

KINDS = ("positions-off-by-one", "cached-key-dropped", "row-mask-ignored", "logit-offset-5pct")
# A tolerance above this share of the logit scale lets a bug that large pass unseen.
BLIND_FRACTION = 0.25


@dataclass(frozen=True)
class CanaryReport:
    lane: str
    caught: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()  # "kind: what was measured"
    not_applicable: tuple[str, ...] = ()  # kinds that cannot be planted here, or that change nothing in this model
    blind: str | None = None  # why this lane cannot see, or None

    @property
    def total(self) -> int:
        return len(self.caught) + len(self.missed)


def canary_case(lane: Lane, kind: str) -> Case | None:
    """The fixed case a canary is checked on: one 6-token prompt, or a ragged left-padded pair for the mask."""
    info = lane.info
    tokens = [t for t in range(3, info.vocab_size) if t not in info.special_ids][:8]
    if info.encoder_decoder:  # its decoder prompts are never padded: a padding mask has nothing to drop
        plain = Case(prompts=(tuple(tokens[:6]),), max_new_tokens=4)
        return None if kind == "row-mask-ignored" else encoder_decoder_case(plain, (tuple(tokens[2:8]),),
                                                                            info.decoder_start_id)
    if kind == "row-mask-ignored":
        if (lane.capabilities.max_batch or 2) < 2:
            return None
        return Case(prompts=(tuple(tokens[:6]), tuple(tokens[6:8])), max_new_tokens=4)
    return Case(prompts=(tuple(tokens[:6]),), max_new_tokens=4)


def check_canaries(lane: Lane, tolerance: Tolerance, deadline: float | None = None,
                   progress: Progress | None = None) -> CanaryReport:
    """Plant each canary in ``lane`` and check it at ``tolerance`` (each under ``deadline``); ``progress`` is told
    each canary as it starts."""
    caught, unseen, skipped = [], [], []
    for done, kind in enumerate(KINDS):
        if progress is not None:
            progress(done, len(KINDS))
        planted, case = lane.canary(kind, tolerance.logit_scale or 1.0), canary_case(lane, kind)
        if planted is None or case is None:
            skipped.append(kind)
            continue
        verdict = check_within(DECODE, planted, case, tolerance.bounds, deadline)
        if verdict.failed:
            caught.append(kind)
        else:
            unseen.append((kind, planted, case, verdict))
    # A planted change that alters nothing in this model is no blindness, but only once the moved logits
    # were seen: they prove the planted code runs on this model's cached calls at all.
    missed = []
    for kind, planted, case, verdict in unseen:
        inert = _inert(lane, planted, case, tolerance) if "logit-offset-5pct" in caught else None
        if inert is not None:
            skipped.append(f"{kind} ({inert})")
            continue
        m = verdict.metrics
        seen = f"max |diff| {m.max_abs_diff:.3g}, rms {m.rms_diff:.3g}" if m else "no difference"
        missed.append(f"{kind} ({seen})")
    return CanaryReport(lane.name, tuple(caught), tuple(missed), tuple(skipped), _blind(tolerance, missed))


def _inert(lane: Lane, planted: Lane, case: Case, tolerance: Tolerance) -> str | None:
    """Why a canary that went unseen is no blindness: the planted change does not change what this model
    computes at all (ALiBi ignores position ids, a recurrent model has no keys to drop). Its cached path is
    then the clean one's within the rounding noise calibration measured; None otherwise."""
    try:
        [(_, _, mutated, _)] = DECODE.comparisons(planted.subject, case)
        [(_, _, clean, _)] = DECODE.comparisons(lane.subject, case)
    except PathError:
        return None
    if mutated.logits.shape != clean.logits.shape or not bool((mutated.tokens == clean.tokens).all()):
        return None
    effect = compare(clean.logits, mutated.logits, clean.checked & mutated.checked, tolerance.bounds).max_abs_diff
    if effect > tolerance.noise:
        return None
    return f"no effect on this model: the planted change moves no logit past the noise ({effect:.3g} <= {tolerance.noise:.3g})"


def _blind(tolerance: Tolerance, missed: list[str]) -> str | None:
    reasons = []
    if missed:
        reasons.append(f"planted bugs went unseen at tolerance {tolerance.value:.3g}: {', '.join(missed)}")
    if tolerance.logit_scale and tolerance.value > BLIND_FRACTION * tolerance.logit_scale:
        reasons.append(f"tolerance {tolerance.value:.3g} exceeds {BLIND_FRACTION:.0%} of the logit scale "
                       f"{tolerance.logit_scale:.3g}")
    return "; ".join(reasons) or None
