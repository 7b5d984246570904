"""What fuzzkv knows of transformers' quantized KV caches (a leaf: no imports): the knobs each backend takes,
and the layouts whose quantization makes a row depend on the other rows of its batch by design."""

from __future__ import annotations

from typing import Any

# The quantized caches' knobs (transformers' QuantizedCache), as its layer classes validate them: quanto takes 2 or
# 4 bits and axis 0 or -1, HQQ 1, 2, 3, 4 or 8 bits and axis 0 or 1; FP8 quantizes per tensor and takes none. The
# first value of each is what a case shrinks to.
QUANTIZER_OPTIONS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "quanto": ((4, 2), (0, -1)),
    "hqq": ((4, 2, 8, 3, 1), (1, 0)),
    "fp8": ((), ()),
}
# Quantized layouts whose groups span the rows of a batch by design, so a row's quantization depends on the
# other rows (keyed by quantizer and axis; None: any axis), with the library's own words for it.
ROW_MIXING: dict[tuple[str, int | None], str] = {
    ("fp8", None): "FP8 quantizes per tensor, with one scale over the whole batch "
                   "(transformers cache_utils.Fp8QuantizedLayer: 'The per-tensor scale is frozen after the first "
                   "`update`')",
    ("quanto", -1): "quanto's axis -1 takes one scale per channel over every row, head and token of the batch "
                    "(its groups run across them: 'Group size must be a divisor of' batch x heads x tokens)",
    ("hqq", None): "HQQ optimises every group's scale and zero point together, in float32 whatever the cache's "
                   "dtype, and stops all of them when the mean error over the whole tensor (every row) stops "
                   "falling (hqq/core/optimize.py:231-247 in 0.2.8.post1: `current_error = torch.abs(W_f - "
                   "W_r).mean()`); its axis 0 also groups elements across rows (hqq/core/quantize.py:110)",
}


def mixes_rows(settings: dict[str, Any]) -> str | None:
    """Why the quantized layout of ``settings`` (a case's) makes a row depend on its batch; None where not."""
    quantizer = str(settings.get("quantizer"))
    for axis in (settings.get("axis_key"), settings.get("axis_value")):
        why = ROW_MIXING.get((quantizer, None)) or ROW_MIXING.get((quantizer, axis))
        if why:
            return why
    return None


def exact_in_float64(settings: dict[str, Any], dtype: str) -> bool:
    """Whether the quantized oracle holds row independence and cache operations exactly, in float64: float32 runs
    (a float64 twin exists) whose layout keeps each row's groups inside the row."""
    return dtype == "float32" and mixes_rows(settings) is None
