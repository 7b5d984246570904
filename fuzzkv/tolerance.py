"""Tolerances grounded in measurement, never one global constant.

For a model, dtype, device and attention implementation, fuzzkv measures how far the
*uncached* path in that dtype lies from a float64 evaluation of the same model on a few
calibration prompts. That is the rounding noise of one evaluation; two evaluations in a
different order (cached vs uncached) can differ by about twice that. The tolerance is
the noise times a safety factor, with a floor of the dtype's resolution at the measured
logit scale, so it grows with both dtype and logit magnitude.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import cast

import torch

from fuzzkv.backends.interface import Backend
from fuzzkv.case import Case

SAFETY_FACTOR = 16.0
ESTIMATED_NOISE_RATIO = 8.0
# Unit roundoff of each dtype: the floor is `resolution * logit scale * SAFETY_FACTOR`.
RESOLUTION = {"float32": 2.0**-23, "bfloat16": 2.0**-8, "float16": 2.0**-11}


@dataclass(frozen=True)
class Tolerance:
    """A tolerance and the measurements behind it."""

    value: float
    source: str  # one line: how it was obtained
    noise: float  # max |uncached(dtype) - uncached(float64)| over the calibration prompts
    logit_scale: float
    safety_factor: float
    calibration_prompts: int

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(backend: Backend, dtype: str, *, prompts: int = 4, length: int = 12, seed: int = 0) -> Tolerance:
    """Measure the noise of ``backend``'s uncached path in ``dtype`` against float64."""
    rng = random.Random(seed)
    vocab = backend.info.vocab_size
    limit = backend.info.max_positions or length + 1
    noise, scale = 0.0, 0.0
    for i in range(prompts):
        n = max(2, min(length, limit - 1) - i)
        # Unpadded single prompts: padded rows can be NaN in float64 eager attention.
        # Case normalises the prompt row (a generator here) to a tuple of ints.
        case = Case(prompts=(cast("tuple[int, ...]", (rng.randrange(vocab) for _ in range(n))),), max_new_tokens=1,
                    dtype=dtype)
        tokens = torch.tensor([case.prompts[0]])
        mask = torch.ones_like(tokens)
        low = backend.reference(tokens, mask).double()
        scale = max(scale, float(low.abs().max()))
        try:
            high = backend.reference(tokens, mask, float64=True)
        except (RuntimeError, ValueError, TypeError) as exc:
            return _floor_only(backend, dtype, scale, prompts, exc)
        noise = max(noise, float((low - high).abs().max()))
    _release(backend)
    value = SAFETY_FACTOR * max(noise, RESOLUTION[dtype] * scale)
    source = (f"calibrated: {SAFETY_FACTOR:g} x max(noise {noise:.2g} vs float64 over {prompts} prompts, "
              f"{dtype} resolution x logit scale {scale:.3g})")
    return Tolerance(value, source, noise, scale, SAFETY_FACTOR, prompts)


def _floor_only(backend, dtype: str, scale: float, prompts: int, error: Exception) -> Tolerance:
    """When the model cannot run in float64, estimate its noise from the dtype's resolution.

    Where float64 works, the measured noise is 4 to 7 times resolution x logit scale on the
    tiny registry models; ESTIMATED_NOISE_RATIO takes the top of that range.
    """
    _release(backend)
    noise = ESTIMATED_NOISE_RATIO * RESOLUTION[dtype] * scale
    source = (f"{SAFETY_FACTOR:g} x estimated noise {noise:.2g} ({ESTIMATED_NOISE_RATIO:g} x {dtype} resolution x "
              f"logit scale {scale:.3g}): the model cannot run in float64 here "
              f"({type(error).__name__}: {str(error).splitlines()[0][:120]})")
    return Tolerance(SAFETY_FACTOR * noise, source, noise, scale, SAFETY_FACTOR, prompts)


def _release(backend: Backend) -> None:
    backend.release_float64()


def summed(first: Tolerance, second: Tolerance, names: str) -> Tolerance:
    """The tolerance between two implementations: each side's own rounding noise, added."""
    return Tolerance(first.value + second.value,
                     f"{names} tolerances {first.value:.3g} + {second.value:.3g}: each side's own rounding noise",
                     first.noise + second.noise, max(first.logit_scale, second.logit_scale), 1.0, 0)


def fixed(value: float) -> Tolerance:
    """A tolerance the user set with ``--tolerance``."""
    return Tolerance(value, f"set by --tolerance {value:g}", 0.0, 0.0, 1.0, 0)
