"""Checking one case: run an oracle's comparisons on a lane, under the per-example deadline.

``run`` (inside Hypothesis), the flaky re-check and ``replay`` all call :func:`check_within`,
so a stored hang replays as a ``Deadline`` finding instead of hanging the replay.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TypeVar

import torch

from fuzzkv.backends.interface import Lane, PathError, Refused, Trace
from fuzzkv.case import Case
from fuzzkv.comparison import compare
from fuzzkv.oracles.interface import Oracle
from fuzzkv.verdict import PRECISE_SHARE, Bounds, Kind, Metrics, Verdict

S = TypeVar("S")  # what the lane hands the oracle's comparisons


class ExampleDeadline(BaseException):
    """A case ran past --deadline. A BaseException, so a model path's ``except Exception`` cannot swallow it."""


def check(oracle: Oracle[S], lane: Lane[S], case: Case, bounds: Bounds) -> Verdict:
    """Run every comparison of ``oracle`` on ``lane``; the verdict reports the worst one."""
    tolerance = bounds.value
    try:
        comparisons = oracle.comparisons(lane.subject, case)
    except PathError as exc:
        kind: Kind = "refused" if isinstance(exc.error, Refused) else "error"
        return Verdict(oracle.name, case, kind, tolerance, error=str(exc), error_type=type(exc.error).__name__)
    worst: tuple[str, Metrics, Bounds, bool] | None = None
    for label, reference, candidate, own in comparisons:
        blind = _non_finite(reference, candidate)
        if blind:
            return Verdict(oracle.name, case, "error", tolerance, error=f"{label}: {blind}", error_type="NonFinite")
        limits = _limits(bounds, own, reference.logits.shape[-1])
        metrics = compare(reference.logits, candidate.logits, reference.checked & candidate.checked, limits)
        if worst is None or _beyond(metrics, limits) > _beyond(worst[1], worst[2]):
            worst = (label, metrics, limits, own is not None)
    assert worst is not None, f"oracle {oracle.name} made no comparison"
    label, metrics, limits, lossy = worst
    beyond = _beyond(metrics, limits)
    if lossy:  # a comparison with its own calibrated bounds: judged by them, never re-run
        return Verdict(oracle.name, case, "mismatch" if beyond > 1 else "pass", limits.value, metrics=metrics,
                       comparison=label, own_bounds=True)
    if beyond > 1:
        # Rounding has a tail that calibration's cases do not reach, and how long it is depends on the model:
        # on tiny hybrid and MoE models 1.1-1.8x past the bounds, on a tiny Mamba 4.8x (a difference that
        # shrank 145x in float64). So every mismatch is re-run in the higher precision, where rounding shrinks
        # and a bug keeps its size; no distance from the bounds tells them apart. But first the same comparison runs
        # once more as it ran: a path that gives another output for the same input is no rounding tail, whatever the
        # higher precision says (a bug firing on some calls only is absent from most re-runs there). It stays a
        # mismatch, and the runner's re-checks store it as flaky.
        again = _difference_on(oracle, lane.subject, case, label, limits)
        if again is None or abs(again - metrics.max_abs_diff) > limits.value:
            return Verdict(oracle.name, case, "mismatch", tolerance, metrics=metrics, comparison=label)
        metrics = replace(metrics, precise_diff=_precise_difference(oracle, lane, case, label, limits))
        if metrics.precise_diff is not None and metrics.precise_diff <= PRECISE_SHARE * metrics.max_abs_diff:
            beyond = 0.0  # rounding: the difference shrinks in the higher precision
    return Verdict(oracle.name, case, "mismatch" if beyond > 1 else "pass", tolerance, metrics=metrics,
                   comparison=label)


def _limits(run: Bounds, own: Bounds | None, width: int) -> Bounds:
    """The bounds one comparison is judged by: the run's, or its own (never tighter than the run's rounding).
    A comparison of one value per position (a log-prob) has no vocabulary to take a root mean square over: the
    run's RMS bound, calibrated over whole logit vectors, does not apply to it."""
    limits = run if own is None else Bounds(max(own.value, run.value),
                                            None if own.rms is None else max(own.rms, run.rms or 0.0))
    return replace(limits, rms=None) if width == 1 else limits


def _precise_difference(oracle: Oracle[S], lane: Lane[S], case: Case, label: str, bounds: Bounds) -> float | None:
    """The largest difference of comparison ``label`` re-run in the higher precision; None where it cannot be."""
    subject = lane.precise_subject()
    try:
        # None where the precise paths cannot run this case, or are NaN there (a fully masked padding query is NaN in
        # float64 eager attention): no answer, and the mismatch stands.
        return None if subject is None else _difference_on(oracle, subject, case, label, bounds)
    finally:
        lane.release_precise()  # a full-size precise twin is as large as the model: never keep it


def _difference_on(oracle: Oracle[S], subject: S, case: Case, label: str, bounds: Bounds) -> float | None:
    """The largest difference of comparison ``label`` of ``oracle`` on ``subject``; None where a path raises or
    gives non-finite logits."""
    try:
        for each_label, reference, candidate, _own in oracle.comparisons(subject, case):
            if each_label == label:
                if _non_finite(reference, candidate):
                    return None
                return compare(reference.logits, candidate.logits, reference.checked & candidate.checked,
                               bounds).max_abs_diff
        return None
    except PathError:
        return None


def _beyond(metrics: Metrics, bounds: Bounds) -> float:
    """How far past its bounds a comparison went (above 1: a mismatch)."""
    by_max = metrics.max_abs_diff / bounds.value  # a bound is positive (RunConfig and calibration see to it)
    by_rms = metrics.rms_diff / bounds.rms if bounds.rms else 0.0
    return max(by_max, by_rms)


@contextmanager
def within(deadline: float | None) -> Iterator[None]:
    """Raise :class:`ExampleDeadline` in the block after ``deadline`` seconds. The timer needs the main
    thread (SIGALRM); elsewhere, or without a deadline, the block runs unbounded."""
    if not deadline or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(_signum: int, _frame: object) -> None:
        raise ExampleDeadline()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, deadline)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_deadline(seconds: float | None) -> str:
    """How a Deadline error names --deadline."""
    return f"the per-example deadline of {seconds:g} s"


# After a hang: a case gets this many times the slowest case that finished, at least AFTER_HANG_FLOOR seconds.
AFTER_HANG_FACTOR, AFTER_HANG_FLOOR = 10, 10.0


class HangClock:
    """The deadline of each case in one sequence of cases (a search, a calibration): ``deadline`` until a case
    has hung and another has finished; from then on AFTER_HANG_FACTOR times the slowest case that finished, at
    least ``floor`` seconds and never more than ``deadline``.

    Why: the cases after a hang are mostly more of it (the shrinker's smaller tries, calibration's other batched
    cases), and each would otherwise wait out the whole deadline again: a dozen shrink tries at the default
    300 s are an hour. The runner re-checks a search's minimal case under the full deadline (``check_within``
    with ``deadline``), so a case that was only slow is stored flaky, never a hang."""

    def __init__(self, deadline: float | None, floor: float = AFTER_HANG_FLOOR):
        self.deadline, self.floor = deadline, floor
        self.hung = False  # a case ran past its deadline
        self.slowest: float | None = None  # seconds of the slowest case that finished

    def next(self) -> tuple[float | None, str]:
        """The next case's deadline, and how a Deadline error names it."""
        if self.deadline is None:
            return None, ""  # nothing can run past it
        if not self.hung or self.slowest is None:
            return self.deadline, run_deadline(self.deadline)
        shorter = max(self.floor, AFTER_HANG_FACTOR * self.slowest)
        if shorter >= self.deadline:
            return self.deadline, run_deadline(self.deadline)
        return shorter, (f"{shorter:.3g} s (the longer of {self.floor:g} s and {AFTER_HANG_FACTOR} x the slowest case "
                         f"that finished, once a case had run past {run_deadline(self.deadline)})")

    def finished(self, seconds: float | None) -> None:
        """Record a case: the seconds it took, or None where it ran past its deadline."""
        if seconds is None:
            self.hung = True
        else:
            self.slowest = max(self.slowest or 0.0, seconds)

    @contextmanager
    def within(self) -> Iterator[None]:
        """:func:`within` the next case's deadline, recording how the block ended (other exceptions: not at all)."""
        began = time.monotonic()
        try:
            with within(self.next()[0]):
                yield
        except ExampleDeadline:
            self.finished(None)
            raise
        self.finished(time.monotonic() - began)


def check_within(oracle: Oracle[S], lane: Lane[S], case: Case, bounds: Bounds, deadline: float | None,
                 which: str | None = None) -> Verdict:
    """:func:`check` with a per-example deadline: a path that hangs becomes an error finding
    ("Deadline") instead of stopping an unattended run. ``which`` names the deadline in the
    finding's error (default: as --deadline)."""
    try:
        with within(deadline):
            return check(oracle, lane, case, bounds)
    except ExampleDeadline:
        return Verdict(oracle.name, case, "error", bounds.value, error_type="Deadline",
                       error=f"no result within {which or run_deadline(deadline)} (a hang?)")


def _non_finite(reference: Trace, candidate: Trace) -> str | None:
    """Why a comparison cannot see anything: NaN or Inf logits in the reference path at compared positions."""
    checked = reference.checked & candidate.checked
    if bool(torch.isfinite(reference.logits[checked]).all()):
        return None
    return ("the reference path's logits are NaN or Inf, so no comparison can tell cached from uncached "
            "(the model or its weights produce non-finite values)")
