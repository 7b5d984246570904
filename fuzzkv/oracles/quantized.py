"""The quantized oracle's paths: a lossy quantized KV cache (quanto, HQQ, FP8), held to the properties that
survive quantization (metamorphic, since its logits differ from the unquantized cache's by design):

- a row's result does not depend on the other rows of its batch (each row alone vs in the batch);
- a cache operation it offers (deep copy of a prefix, beam reorder, batch selection) and the library's
  ``generate(cache_implementation="quantized")`` continue like a fresh quantized cache fed the same tokens;
- its loss against the unquantized cache stays within the bound calibrated for the same settings on clean cases.

The first two are exact properties of a layout whose quantization groups stay inside one row: they are checked
in float64 (float32 runs), where no rounding difference between a batch and a row alone moves a value across a
quantization step, so any difference is the cache's. Layouts that mix rows by design (``fuzzkv.quantizers``) and runs in
half dtypes hold them within the calibrated quantization noise instead.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import replace

from fuzzkv.backends.interface import Backend
from fuzzkv.case import Case
from fuzzkv.oracles.calibration import SAFETY_FACTOR, calibration_cases, differences
from fuzzkv.oracles.check import Comparison, Pairs, run_path
from fuzzkv.oracles.core import batch_rows_alone
from fuzzkv.quantizers import exact_in_float64
from fuzzkv.verdict import Bounds

# Per-setting loss bounds, per backend (a backend object is one model in one dtype): calibration runs the
# calibration cases twice per setting, and a search revisits settings as it shrinks.
_LOSS_BOUNDS: weakref.WeakKeyDictionary[Backend, dict[tuple[tuple[str, object], ...], Bounds | None]] = \
    weakref.WeakKeyDictionary()


def _quantized(backend: Backend, case: Case) -> list[Comparison]:
    plain = replace(case, cache="dynamic", settings=())
    unquantized = run_path("dynamic cache", backend.cached, plain)
    quantized = run_path("quantized cache", backend.cached, case, unquantized.tokens)
    noise = loss_bounds(backend, case)
    comparisons = [] if noise is None else [
        Comparison("quantized vs unquantized: loss within its calibrated bound", unquantized, quantized, noise)]
    exact = exact_in_float64(dict(case.settings), case.dtype)
    subject = backend.precise_view() if exact else backend
    if subject is None:  # no float64 paths: the exact properties within the quantization noise, like half dtypes
        subject, exact = backend, False
    own = None if exact else noise
    where = " (float64)" if exact else ""
    try:
        comparisons += _exact_properties(subject, case, own, where)
    finally:
        backend.release_precise()
    return comparisons


def _exact_properties(subject: Backend, case: Case, own: Bounds | None, where: str) -> list[Comparison]:
    """Row independence and the drawn operation against a fresh quantized cache, on ``subject``."""
    fresh = run_path(f"fresh quantized cache{where}", subject.cached, case)
    comparisons = []
    if case.batch_size > 1:
        comparisons.append(Comparison(f"quantized: batch row vs alone{where}",
                                      *batch_rows_alone(subject, case, fresh, same_chunks=True), own))
    operation = case.setting("operation")
    if operation == "generate":
        generated = run_path("generate(cache_implementation='quantized')", subject.generate, case)
        fed = run_path(f"quantized cache fed generate's tokens{where}", subject.cached, case, generated.tokens,
                       chunks=(case.padded_length,))
        comparisons.append(Comparison(f"quantized: generate() vs the cached path{where}", fed, generated, own))
    elif operation != "none":
        reused = run_path(f"quantized prefix cache after {operation}{where}", subject.prefix_reused, case,
                          fresh.tokens, operation)
        comparisons.append(Comparison(f"quantized: prefix after {operation} vs fresh{where}", fresh, reused, own))
    return comparisons


def loss_bounds(backend: Backend, case: Case) -> Bounds | None:
    """How far the quantized cache of ``case``'s settings may differ from the unquantized one: the safety factor
    times the largest difference over the clean calibration cases, with the same settings (None where the
    quantized cache raised on all of them: the search case then raises too, an error finding)."""
    settings = tuple((name, value) for name, value in case.settings if name != "operation")
    known = _LOSS_BOUNDS.setdefault(backend, {})
    if settings not in known:
        worst = worst_rms = None
        for clean in calibration_cases(backend, case.dtype):
            try:
                unquantized = backend.cached(clean)
                quantized = backend.cached(replace(clean, cache="quantized", settings=settings), unquantized.tokens)
            except Exception:  # noqa: BLE001 - a quantized path that raises is the search's finding
                continue
            largest, rms = differences(unquantized, quantized)
            if not math.isfinite(largest):
                continue  # non-finite logits never widen the bound (the search reports them)
            worst, worst_rms = max(worst or 0.0, largest), max(worst_rms or 0.0, rms)
        known[settings] = None if worst is None else Bounds(SAFETY_FACTOR * worst, SAFETY_FACTOR * (worst_rms or 0.0))
    return known[settings]


PAIRS: dict[str, Pairs] = {"quantized": _quantized}
