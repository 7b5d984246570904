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
from typing import TYPE_CHECKING

from fuzzkv.case import Case
from fuzzkv.features import QUANTIZED_CACHE
from fuzzkv.oracles.calibration import SAFETY_FACTOR, calibration_cases, differences
from fuzzkv.oracles.core import batch_rows_alone
from fuzzkv.oracles.interface import Comparison, Oracle, run_path
from fuzzkv.quantizers import exact_in_float64
from fuzzkv.strategies import cases, equal_lengths, quantized_settings, with_settings
from fuzzkv.verdict import Bounds

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend

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


def _script_setup(case: Case) -> str:
    """Whether fuzzkv held the exact properties in float64 (see :func:`_quantized`)."""
    return f"EXACT = {exact_in_float64(dict(case.settings), case.dtype)!r}\n"


QUANTIZED: Oracle[Backend] = Oracle(
    "quantized", "a quantized cache (quanto, HQQ, FP8; drawn bits, axes, groups, residual): each row vs the "
    "row alone and its operations vs a fresh quantized cache (float64), loss vs unquantized within its "
    "calibrated bound", lambda s: with_settings(
        cases(s, min_chunks=2, continued=True, caches=("quantized",)).map(equal_lengths), quantized_settings(s)),
    _quantized, needs=frozenset({QUANTIZED_CACHE}), default=False, script_setup=_script_setup, script='''
# A quantized cache (CASE["settings"]). Exact properties in float64 (float32 runs whose layout keeps each row's
# quantization groups inside the row; fuzzkv's ROW_MIXING lists those that do not): each row vs the row alone,
# and the drawn operation vs a fresh quantized cache. The loss against the unquantized cache is judged by the
# bound fuzzkv calibrated for these settings, where that comparison is the one that failed.
plain = dict(CASE, cache="dynamic", settings={})
tokens, mask, unquantized = cached(subject, plain, PAD, DEVICE)
_, _, quantized = cached(subject, CASE, PAD, DEVICE, forced=tokens)
checked = mask[:, :-1].bool()
loss = max_difference(unquantized, quantized, checked)
print(f"quantized vs unquantized: max |logit difference| {loss:.6g} (calibrated bound {LOSS_TOLERANCE})")
if LOSS_TOLERANCE is not None and loss > LOSS_TOLERANCE:
    FAILED.append("quantized vs unquantized")
exact = subject.to(torch.float64) if EXACT else subject
tokens, mask, fresh = cached(exact, CASE, PAD, DEVICE, forced=tokens)
if len(CASE["prompts"]) > 1:
    report_rows_alone(exact, fresh, tokens, mask, same_chunks=True)
operation = CASE["settings"]["operation"]
if operation == "generate":
    sequences, mask, steps = generate(exact, CASE, PAD, DEVICE, "quantized")
    _, _, fed = cached(exact, CASE, PAD, DEVICE, forced=sequences, chunks=[max(len(p) for p in CASE["prompts"])])
    start = max(len(p) for p in CASE["prompts"]) - 1
    report("generate() vs the cached path", fed[:, start:], torch.stack([s.float() for s in steps], 1).to(fed.dtype),
           torch.ones(fed[:, start:].shape[:2], dtype=torch.bool))
elif operation != "none":
    _, _, resumed = prefix_reused(exact, CASE, PAD, DEVICE, tokens, operation)
    report(f"prefix after {operation} vs fresh", fresh, resumed, mask[:, :-1].bool())
''')
