"""Tolerances grounded in measurement: how far a correct cache may differ from no cache.

Two evaluations of the same function in a different order differ by rounding that grows
with depth, length and dtype; a cache bug adds a difference that does not depend on the
precision. Calibration therefore measures the spread itself: it runs the cached and the
uncached path on a fixed set of cases shaped like the search's (batches, padding, chunks,
the longest lengths) in the run's dtype, and again in a higher precision (float64 for
float32, float32 for half dtypes). Where the two paths agree in the higher precision, their
difference in the run's dtype is rounding, and the tolerance is a safety factor times the
largest such difference, both as the largest |logit difference| and as the largest
root-mean-square difference over the vocabulary (a cache bug moves the whole distribution).
A comparison whose paths differ in the higher precision too is not rounding: it is left out
(the search will report it) and counted in the tolerance's source; so is one the higher
precision cannot check (non-finite there, past the deadline, a model that cannot run there),
said as such. Where no comparison measured rounding, the tolerance is an estimate from the
dtype's resolution, and its source says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import torch

from fuzzkv.backends.interface import Backend, Encoder, PathError, Trace, uncached
from fuzzkv.case import Case
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.calibration import SAFETY_FACTOR, calibration_cases, differences
from fuzzkv.oracles.check import ExampleDeadline, HangClock, within

# The values (a tolerance, a fixed one, a pair's) live with the verdicts they judge: the backend interface reads them.
from fuzzkv.verdict import PRECISE_SHARE, Tolerance, fixed, summed  # noqa: F401 - re-exported

Progress = Callable[[int, int], None]  # (steps done, steps in all), told as each step starts

ESTIMATED_NOISE_RATIO = 8.0
# Calibration learns only from paths that give the same output for the same input: the cases of its largest
# comparisons are run again, and a path wrong on some calls only (which would pass its higher-precision re-check
# whenever the bug happened not to fire there, and teach calibration the bug as noise) leaves nothing to learn from.
# Five comparisons, each run once more: a bug firing on 30% of calls goes unnoticed with probability 0.3^5 = 0.2%.
STEADINESS_PROBES = 5
# Unit roundoff of each dtype: the floor is `resolution * logit scale`.
RESOLUTION = {"float32": 2.0**-23, "bfloat16": 2.0**-8, "float16": 2.0**-11, "float64": 2.0**-52}
PRECISE = {"float32": "float64", "bfloat16": "float32", "float16": "float32"}
ACCUMULATION = {"float32": 8.0, "bfloat16": 1.0, "float16": 1.0}


def _spread(oracle: str, subject: Backend, case: Case) -> list[tuple[float, float]]:
    """Each comparison's (largest, rms) difference for ``oracle`` on ``case``."""
    return [differences(reference, candidate)
            for _label, reference, candidate, _own in ORACLES[oracle].comparisons(subject, case)]


def calibrated_oracles(backend: Backend) -> list[str]:
    """The oracles calibration can measure on a backend: every one that runs on it and has calibration cases."""
    capabilities = backend.capabilities
    return [name for name, oracle in ORACLES.items()
            if oracle.fit is not None and oracle.runs_on(backend.name)
            and capabilities.allows(oracle.min_batch, oracle.needs)]


def covered_oracles(backend: Backend, requested: Sequence[str]) -> tuple[str, ...]:
    """The oracles a run's tolerance on ``backend`` must cover: the ``requested`` ones (empty: the default set)
    calibration measures. Every one it can measure when a requested oracle that runs on the backend has no
    calibration cases of its own (``beam``, ``paged``, ...: held to the spread of all the others), or when none
    of the requested ones runs here (the backend is one side of a ``cross`` lane)."""
    measurable = calibrated_oracles(backend)
    runs_here = [name for name in requested if name in ORACLES and ORACLES[name].runs_on(backend.name)]
    if not runs_here or any(ORACLES[name].fit is None for name in runs_here):
        return tuple(measurable)
    return tuple(name for name in measurable if name in runs_here) or tuple(measurable)


def calibrate(backend: Backend, dtype: str, *, max_prompt_len: int = 16, max_new_tokens: int = 8,
              deadline: float | None = None, oracles: Sequence[str] | None = None,
              progress: Progress | None = None) -> Tolerance:
    """Measure how far the paths each oracle compares legitimately differ on ``backend`` in ``dtype``: the
    comparisons of ``oracles`` (None: every oracle calibration can measure there, :func:`calibrated_oracles`).

    Only the largest differences need the higher precision: the spread is the largest one that is
    rounding, so comparisons are validated from the largest down until one proves to be rounding.
    ``progress`` is told each case as it starts (cases done, cases in all)."""
    every = calibrated_oracles(backend)
    measuring = list(oracles) if oracles is not None else every
    scale = rms_scale = 0.0
    warnings: list[str] = []
    cases = calibration_cases(backend, dtype, max_prompt_len=max_prompt_len, max_new_tokens=max_new_tokens)
    clock = HangClock(deadline)  # after a hang, the other cases need not each wait out the whole deadline
    measured: list[tuple[str, Case, int, float, float]] = []  # (oracle, case, comparison, largest, rms)
    for done, case in enumerate(cases):
        if progress is not None:
            progress(done, len(cases))
        # The oracles' paths overlap (decode's cached path is cache-impl's dynamic side, cache-reuse's fresh side and
        # batch's batched side; its uncached reference is generate's): within one case each runs once.
        remembered = _Remembered(backend)
        try:  # the logit scale, from the uncached path over the greedy sequence
            with clock.within():  # a path that hangs is the search's finding too (a Deadline error)
                cached = remembered.cached(case)
                logits = uncached(remembered, cached.tokens, cached.attention_mask, cached.encoder)[cached.checked]
            scale = max(scale, float(logits.abs().max()))
            rms_scale = max(rms_scale, float(logits.pow(2).mean(-1).sqrt().max()))
        except ExampleDeadline:  # every oracle's paths would wait for it too
            _note(warnings, "a calibration case ran past the per-example deadline")
            continue
        except Exception as exc:  # noqa: BLE001 - a cached path that raises is the search's finding
            _note(warnings, f"the cached path raised {type(exc).__name__} on a calibration case")
        for oracle in measuring:
            fit = ORACLES[oracle].fit
            fitted = fit(case) if fit is not None else None
            if fitted is None:
                continue
            try:
                with clock.within():
                    subject = cast(Backend, remembered)
                    measured += [(oracle, fitted, i, *d) for i, d in enumerate(_spread(oracle, subject, fitted))]
            except ExampleDeadline:
                _note(warnings, "a calibration case ran past the per-example deadline")
            except PathError as exc:  # a path that raises is the search's finding, not calibration's
                _note(warnings, f"{oracle} raised {type(exc.error).__name__} on a calibration case")
    # A run's own oracles are named, since the others were not measured.
    scope = "" if set(measuring) == set(every) else f" of {', '.join(measuring)}"
    largest_first = sorted(measured, key=lambda m: -m[3])
    jitter = 10 * RESOLUTION[dtype] * scale  # how far a repeat may move a difference and still be the same
    probed: set[tuple[str, Case, int]] = set()

    def unsteady(entries: Sequence[tuple[str, Case, int, float, float]]) -> int:
        """How many of ``entries`` (each probed once per calibration) gave another difference when run again."""
        fresh = [m for m in entries if m[:3] not in probed]
        probed.update(m[:3] for m in fresh)
        return sum(not _repeats(m[0], backend, m[1], m[2], m[3], jitter, deadline) for m in fresh)

    def not_deterministic(count: int) -> Tolerance:
        _note(warnings, f"not deterministic: {count} of the largest comparisons gave another difference when their "
                        "case ran again, so none is taken as rounding (the search stores such a failure as flaky)")
        backend.release_precise()
        return _tolerance(dtype, 0.0, 0.0, scale, rms_scale, 0, LeftOut(unrepeatable=len(measured)), warnings, scope)

    if count := unsteady(largest_first[:STEADINESS_PROBES]):
        return not_deterministic(count)
    # Each comparison checked in the higher precision, largest first: True where it is rounding, False where its
    # paths differ there too, or why it could not be checked there.
    checks: dict[tuple[str, Case, int], bool | str] = {}
    validated: dict[tuple[str, Case], list[tuple[float, float]] | str] = {}  # each case's comparisons run once there

    def rounding(entry: tuple[str, Case, int, float, float]) -> bool:
        oracle, case, i, largest, _rms = entry
        if (oracle, case, i) not in checks:
            if (oracle, case) not in validated:
                try:
                    # The full deadline, not the clock's: the higher precision's paths are slower than the ones it
                    # timed.
                    with within(deadline):
                        validated[(oracle, case)] = _validate(oracle, backend, case, dtype)
                except ExampleDeadline:
                    validated[(oracle, case)] = f"past the per-example deadline in {PRECISE[dtype]}"
            high = validated[(oracle, case)]
            limit = max(PRECISE_SHARE * largest, RESOLUTION[PRECISE[dtype]] * scale * 1e3)
            # Unverifiable counts as not rounding: a difference that cannot be shown to be rounding must not widen
            # the tolerance.
            checks[(oracle, case, i)] = (high if isinstance(high, str)
                                         else f"not run in {PRECISE[dtype]}" if i >= len(high)
                                         else high[i][0] <= limit)
        return checks[(oracle, case, i)] is True

    noise_from = next((m for m in largest_first if rounding(m)), None)
    rms_from = next((m for m in sorted(measured, key=lambda m: -m[4]) if rounding(m)), None)
    # The comparisons the spread is taken from repeat too: a higher-precision run where the bug did not fire would
    # pass them by chance.
    if count := unsteady([m for m in (noise_from, rms_from) if m is not None]):
        return not_deterministic(count)
    noise, rms_noise = noise_from[3] if noise_from else 0.0, rms_from[4] if rms_from else 0.0
    # A comparison the higher precision could not check stays out of the spread even when none could be checked (a
    # model that cannot run there at all): its difference may be a bug, and the dtype's estimate stands instead.
    unchecked = [why for why in checks.values() if isinstance(why, str)]
    backend.release_precise()
    left_out = LeftOut(sum(ok is False for ok in checks.values()), tuple(Counter(unchecked).items()))
    counted = len(measured) - left_out.total
    return _tolerance(dtype, noise, rms_noise, scale, rms_scale, counted, left_out, warnings, scope)


class _Remembered:
    """``backend`` with its cached path and its uncached reference remembered per input, for one calibration case
    (a full-size model's logits are large: nothing is kept past the case). Everything else is the backend's own.
    The steadiness probes and the higher-precision checks run on the backend itself: they must run again."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._traces: dict[tuple[object, ...], Trace] = {}
        self._references: dict[tuple[object, ...], torch.Tensor] = {}

    def __getattr__(self, name: str) -> object:
        return getattr(self._backend, name)

    def cached(self, case: Case, tokens: torch.Tensor | None = None, **options: Any) -> Trace:
        # The case as the path reads it: its cache and chunks as given, and without cache-reuse's primer batch.
        path = replace(case, cache=options.get("cache") or case.cache,
                       prefill_chunks=options.get("chunks") or case.prefill_chunks, reuse_batch=0)
        key = (path, options.get("precise", False), *_contents(tokens))
        if key not in self._traces:  # called as the oracle called it
            given = (case,) if tokens is None else (case, tokens)
            self._traces[key] = self._backend.cached(*given, **options)
        return self._traces[key]

    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, precise: bool = False,
                  encoder: Encoder | None = None) -> torch.Tensor:
        encoded = () if encoder is None else (*_contents(encoder[0]), *_contents(encoder[1]))
        key = (precise, *_contents(tokens), *_contents(attention_mask), *encoded)
        if key not in self._references:
            self._references[key] = uncached(self._backend, tokens, attention_mask, encoder, precise=precise)
        return self._references[key]


def _contents(tensor: torch.Tensor | None) -> tuple[object, ...]:
    return () if tensor is None else (tuple(tensor.shape), tensor.cpu().numpy().tobytes())


@dataclass(frozen=True)
class LeftOut:
    """The comparisons calibration left out of the spread, by why: a difference that is not rounding, or one it could
    not check, must not widen the tolerance. Only the first kind hints at a bug (the search will meet it)."""

    differing: int = 0  # their paths differ in the higher precision too: not rounding
    unchecked: tuple[tuple[str, int], ...] = ()  # (why the higher precision could not check them, how many)
    unrepeatable: int = 0  # every comparison of paths that gave another output for the same input (none trusted)

    @property
    def total(self) -> int:
        return self.differing + sum(count for _why, count in self.unchecked) + self.unrepeatable

    def said(self, precise: str) -> str:
        """The left-out comparisons as the tolerance's source says them ("" when none), each kind with its count."""
        parts = [f"{self.differing} left out as not rounding: their paths differ in {precise} too (the search meets "
                 "them if they are a bug)"] if self.differing else []
        if self.unrepeatable:
            parts.append(f"{self.unrepeatable} left out as not reproducible: the paths gave another output for the same "
                         "input")
        if self.unchecked:
            whys = ", ".join(f"{why} ({count})" for why, count in self.unchecked)
            parts.append(f"{sum(count for _why, count in self.unchecked)} left out unchecked, not as bugs: {whys}")
        return "; ".join(parts)


def _repeats(oracle: str, backend: Backend, case: Case, i: int, largest: float, jitter: float,
             deadline: float | None) -> bool:
    """Whether comparison ``i`` of ``oracle`` on ``case``, run once more, gives the same largest difference within
    ``jitter`` (ten times the dtype's resolution at the logit scale: far below any planted or real cache bug, above a
    non-deterministic kernel's reduction order; a deterministic path repeats exactly). A bug firing on both runs
    moves the difference by more (a fixed ratio would let two firings of one size pass). A path that raises or hangs
    on the repeat did not reproduce either."""
    try:
        with within(deadline):
            again = _spread(oracle, backend, case)
    except (ExampleDeadline, PathError):
        return False
    if len(again) <= i:
        return False
    if math.isnan(again[i][0]) or math.isnan(largest):  # NaN twice is the same output (a NaN model is steady)
        return math.isnan(again[i][0]) and math.isnan(largest)
    return abs(again[i][0] - largest) <= jitter


def _validate(oracle: str, backend: Backend, case: Case, dtype: str) -> list[tuple[float, float]] | str:
    """The same comparisons in the higher precision, or why they cannot be run there."""
    precise = backend.precise_view()
    if precise is None:
        return f"the backend has no {PRECISE[dtype]} paths"
    try:
        high = _spread(oracle, precise, case)
    except (PathError, ExampleDeadline) as exc:
        return f"{type(getattr(exc, 'error', exc)).__name__} in {PRECISE[dtype]}"
    if any(h[0] == float("inf") for h in high):
        # A fully masked padding query is NaN in float64 eager attention: nothing to compare there.
        padded = len({len(prompt) for prompt in case.prompts}) > 1
        return f"{'padded rows ' if padded else ''}non-finite in {PRECISE[dtype]}"
    return high


def _note(warnings: list[str], note: str) -> None:
    if note not in warnings:
        warnings.append(note)


def _tolerance(dtype: str, noise: float, rms_noise: float, scale: float, rms_scale: float, measured: int,
               left_out: LeftOut, warnings: list[str], scope: str = "") -> Tolerance:
    # float32 matmuls accumulate in float32: sqrt(64) unit roundoffs for the narrowest (64-wide) sums;
    # half-precision kernels accumulate in float32 too, so one final rounding dominates there.
    floor = RESOLUTION[dtype] * scale * ACCUMULATION[dtype]
    if measured == 0:
        # No comparison measured rounding (each raised, hung or was left out): a spread over 0 comparisons is no
        # calibration, so the source says the value is an estimate from the dtype's resolution, and why.
        noise, rms_noise = ESTIMATED_NOISE_RATIO * floor, ESTIMATED_NOISE_RATIO * RESOLUTION[dtype] * rms_scale
        source = (f"estimated, not calibrated: no comparison{scope} measured rounding, so {SAFETY_FACTOR:g} x "
                  f"{ESTIMATED_NOISE_RATIO:g} x {dtype} resolution x logit scale {scale:.3g}"
                  + (" (no calibration case ran)" if scale == 0 else ""))
    else:
        source = (f"calibrated: {SAFETY_FACTOR:g} x the largest difference between the compared paths over {measured} "
                  f"comparisons{scope} (max {noise:.2g}, rms {rms_noise:.2g}; logit scale {scale:.3g})")
    value = SAFETY_FACTOR * max(noise, floor)
    rms_value = SAFETY_FACTOR * max(rms_noise, RESOLUTION[dtype] * rms_scale * ACCUMULATION[dtype])
    source = "; ".join(filter(None, [source, left_out.said(PRECISE[dtype]), *warnings]))
    return Tolerance(value, source, noise, scale, SAFETY_FACTOR, measured, rms_value, rms_noise, left_out.total,
                     tuple(warnings))
