"""Numbers, not booleans: how two paths' logits differ, and what that means (no torch here:
reporters read verdicts; :mod:`fuzzkv.comparison` computes them).

A logit difference above the tolerance is a bug whatever the tokens do. A greedy-token
divergence where the reference's top-2 margin is below the tolerance is rounding, and
is reported but never failed on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from fuzzkv.case import Case

# A difference in the higher precision (float64 for float32, float32 for half dtypes) above this share of the
# run's own is not rounding: a bug keeps its size there, while rounding shrinks by orders of magnitude (to 1/8
# at most measured: models compute rotary angles in float32 even in a float64 model). Calibration and the
# re-check of near-bound mismatches (fuzzkv.oracles.check) both use it.
PRECISE_SHARE = 1 / 2

# "pass": the paths agree; "mismatch": logits differ past the tolerance; "error": a path raised
# (or produced non-finite logits, or hung) where the other did not; "refused": the library refused the case
# with the error it documents for a combination it does not support (neither a pass nor a finding: the search
# discards the case).
Kind = Literal["pass", "mismatch", "error", "refused"]


@dataclass(frozen=True)
class Bounds:
    """What two paths may differ by: the largest |logit difference| at any position, and (where
    calibrated) the largest root-mean-square difference over the vocabulary at any position."""

    value: float
    rms: float | None = None
    # The bound of the failing comparison where it carried its own (a quantized cache's calibrated loss), for
    # the reproduction script to judge that comparison by; None otherwise.
    lossy: float | None = None


@dataclass(frozen=True)
class Metrics:
    """How a candidate path's logits differ from the reference path's."""

    max_abs_diff: float
    mean_abs_diff: float
    logit_scale: float  # largest |logit| of the reference: the scale the diff is read against
    first_bad_position: int | None  # earliest position whose difference exceeds the tolerance
    first_bad_row: int | None
    greedy_divergence_step: int | None  # earliest position where the argmax tokens differ
    top2_margin: float | None  # the reference's top-1 minus top-2 logit at that position
    positions_compared: int
    # The largest difference over the batch at each position (None where nothing was compared):
    # what the report's chart draws, to show which step breaks and how fast it grows.
    per_position: tuple[float | None, ...] = ()
    # The largest root-mean-square difference over the vocabulary at any position, and its bound:
    # a broad shift of the distribution (what cache bugs cause) shows here long before the max does.
    rms_diff: float = 0.0
    rms_tolerance: float | None = None
    # A mismatch close to its bounds is re-run in the higher precision: the same comparison's largest
    # difference there (None: not re-checked). A bug keeps its size; rounding does not.
    precise_diff: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one oracle on one case."""

    oracle: str
    case: Case
    kind: Kind
    tolerance: float
    metrics: Metrics | None = None
    error: str | None = None  # "<path> path raised <Type>: <message>" for kind "error"
    error_type: str | None = None
    comparison: str | None = None  # which of the oracle's comparisons the numbers come from
    # The comparison judged carried its own bounds (a lossy surface's, calibrated per setting): ``tolerance`` is
    # that bound, not the run's.
    own_bounds: bool = False

    @property
    def failed(self) -> bool:
        return self.kind in ("mismatch", "error")

    @property
    def score(self) -> float:
        """Difference over tolerance: what Hypothesis's ``target()`` climbs."""
        m = self.metrics
        if m is None or self.tolerance <= 0:
            return 0.0
        rms = m.rms_diff / m.rms_tolerance if m.rms_tolerance else 0.0
        return min(max(m.max_abs_diff / self.tolerance, rms), 1e6)

    def summary(self) -> str:
        if self.kind == "refused":
            return f"{self.oracle}: refused by the library - {self.error}"
        if self.kind == "error":
            return f"{self.oracle}: error - {self.error}"
        m = self.metrics
        assert m is not None  # only "error" verdicts come without metrics
        where = f" first at position {m.first_bad_position} (row {m.first_bad_row})" if m.first_bad_position is not None else ""
        what = f" ({self.comparison})" if self.comparison else ""
        if m.max_abs_diff <= self.tolerance and m.rms_tolerance is not None:
            return (f"{self.oracle}{what}: rms |diff| {m.rms_diff:.3g} {_against(m.rms_diff, m.rms_tolerance)} rms "
                    f"tolerance {m.rms_tolerance:.3g} (max |diff| {m.max_abs_diff:.3g}, tolerance {self.tolerance:.3g})"
                    f"{where}")
        precise = f"; {m.precise_diff:.3g} in the higher precision" if m.precise_diff is not None else ""
        return (f"{self.oracle}{what}: max |diff| {m.max_abs_diff:.3g} {_against(m.max_abs_diff, self.tolerance)} "
                f"tolerance {self.tolerance:.3g}{where}{precise}")


def _against(difference: float, bound: float) -> str:
    """The sign between a difference and its bound as the numbers stand: a summary is read for it, and a pass (or a
    mismatch re-checked as rounding) is within its bounds."""
    return ">" if difference > bound else "<="


@dataclass(frozen=True)
class Tolerance:
    """A tolerance and the measurements behind it."""

    value: float  # the largest |logit difference| allowed at any position
    source: str  # one line: how it was obtained
    noise: float  # largest |cached - uncached| over the clean calibration cases
    logit_scale: float
    safety_factor: float
    calibration_prompts: int  # calibration cases that measured rounding
    rms_value: float | None = None  # the largest RMS difference over the vocabulary allowed at any position
    rms_noise: float | None = None
    left_out: int = 0  # comparisons left out of the spread: not rounding, or not checkable in the higher precision
    warnings: tuple[str, ...] = field(default=())

    @property
    def bounds(self) -> Bounds:
        return Bounds(self.value, self.rms_value)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def fixed(value: float) -> Tolerance:
    """A tolerance the user set with ``--tolerance`` (on the largest |logit difference|; no RMS bound)."""
    return Tolerance(value, f"set by --tolerance {value:g}", 0.0, 0.0, 1.0, 0)


def summed(first: Tolerance, second: Tolerance, names: str) -> Tolerance:
    """The tolerance between two implementations: each side's own rounding spread, added."""
    rms = first.rms_value + second.rms_value if first.rms_value and second.rms_value else None
    return Tolerance(first.value + second.value,
                     f"{names} tolerances {first.value:.3g} + {second.value:.3g}: each side's own rounding spread",
                     first.noise + second.noise, max(first.logit_scale, second.logit_scale), 1.0, 0, rms)
