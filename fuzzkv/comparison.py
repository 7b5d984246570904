"""Compare two paths' logits into :class:`~fuzzkv.verdict.Metrics` (the torch half of the verdict)."""

from __future__ import annotations

import torch

from fuzzkv.verdict import Bounds, Metrics


def compare(reference: torch.Tensor, candidate: torch.Tensor, checked: torch.Tensor, bounds: Bounds) -> Metrics:
    """Compare logits [B, T, V] at the ``checked`` [B, T] positions against ``bounds``."""
    ref, cand = reference.double(), candidate.double()
    diff = (ref - cand).abs()
    # NaN in both paths at the same place is the same answer; NaN or inf in one only is not.
    same_nonfinite = ~torch.isfinite(ref) & ~torch.isfinite(cand) & ((ref == cand) | (ref.isnan() & cand.isnan()))
    diff = torch.where(same_nonfinite, torch.zeros_like(diff), diff)
    diff = torch.nan_to_num(diff, nan=float("inf"))
    per_pos = diff.amax(-1).masked_fill(~checked, 0.0)
    # The same statistic as hf_paths.rms_difference (what reproduction scripts print).
    rms_pos = diff.pow(2).mean(-1).sqrt().masked_fill(~checked, 0.0)
    count = int(checked.sum())
    if count == 0:
        return Metrics(0.0, 0.0, 0.0, None, None, None, None, 0, (), 0.0, bounds.rms)
    beyond = per_pos > bounds.value
    if bounds.rms is not None:
        beyond |= rms_pos > bounds.rms
    row, pos = _first(beyond)
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
        rms_diff=float(rms_pos.max()), rms_tolerance=bounds.rms,
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
