"""Numbers, not booleans: how two paths' logits differ, and what that means.

A logit difference above the tolerance is a bug whatever the tokens do. A greedy-token
divergence where the reference's top-2 margin is below the tolerance is rounding, and
is reported but never failed on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from fuzzkv.case import Case


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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """The outcome of one oracle on one case."""

    oracle: str
    case: Case
    kind: str  # "pass", "mismatch" or "error"
    tolerance: float
    metrics: Metrics | None = None
    error: str | None = None  # "<path> path raised <Type>: <message>" for kind "error"
    error_type: str | None = None
    comparison: str | None = None  # which of the oracle's comparisons the numbers come from

    @property
    def failed(self) -> bool:
        return self.kind != "pass"

    @property
    def score(self) -> float:
        """Difference over tolerance: what Hypothesis's ``target()`` climbs."""
        if self.metrics is None or self.tolerance <= 0:
            return 0.0
        return min(self.metrics.max_abs_diff / self.tolerance, 1e6)

    def summary(self) -> str:
        if self.kind == "error":
            return f"{self.oracle}: error - {self.error}"
        m = self.metrics
        where = f" first at position {m.first_bad_position} (row {m.first_bad_row})" if m.first_bad_position is not None else ""
        what = f" ({self.comparison})" if self.comparison else ""
        return f"{self.oracle}{what}: max |diff| {m.max_abs_diff:.3g} > tolerance {self.tolerance:.3g}{where}"


def compare(reference: torch.Tensor, candidate: torch.Tensor, checked: torch.Tensor, tolerance: float) -> Metrics:
    """Compare logits [B, T, V] at the ``checked`` [B, T] positions."""
    ref, cand = reference.double(), candidate.double()
    diff = (ref - cand).abs()
    # NaN in both paths at the same place is the same answer; NaN or inf in one only is not.
    same_nonfinite = ~torch.isfinite(ref) & ~torch.isfinite(cand) & ((ref == cand) | (ref.isnan() & cand.isnan()))
    diff = torch.where(same_nonfinite, torch.zeros_like(diff), diff)
    diff = torch.nan_to_num(diff, nan=float("inf"))
    per_pos = diff.amax(-1).masked_fill(~checked, 0.0)
    count = int(checked.sum())
    if count == 0:
        return Metrics(0.0, 0.0, 0.0, None, None, None, None, 0, ())
    row, pos = _first(per_pos > tolerance)
    div_row, div_pos = _first((ref.argmax(-1) != cand.argmax(-1)) & checked)
    margin = _top2_margin(ref[div_row, div_pos]) if div_pos is not None else None
    finite_ref = torch.nan_to_num(ref.abs(), nan=0.0, posinf=0.0)
    return Metrics(
        max_abs_diff=float(per_pos.max()),
        mean_abs_diff=float(diff.mean(-1).masked_fill(~checked, 0.0).sum() / count),
        logit_scale=float(finite_ref.amax(-1)[checked].max()),
        first_bad_position=pos, first_bad_row=row,
        greedy_divergence_step=div_pos, top2_margin=margin, positions_compared=count,
        per_position=_per_position(per_pos, checked),
    )


def _per_position(per_pos: torch.Tensor, checked: torch.Tensor) -> tuple[float | None, ...]:
    worst = per_pos.amax(0).tolist()
    compared = checked.any(0).tolist()
    return tuple(w if c else None for w, c in zip(worst, compared))


def _first(flags: torch.Tensor) -> tuple[int | None, int | None]:
    """(row, position) of the earliest True by position, or (None, None)."""
    hits = flags.nonzero()
    if hits.numel() == 0:
        return None, None
    best = hits[hits[:, 1].argmin()]
    return int(best[0]), int(best[1])


def _top2_margin(logits: torch.Tensor) -> float:
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])
