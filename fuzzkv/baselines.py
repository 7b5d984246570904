"""Tolerance baselines: measured once per model configuration and library versions, then reused.

``fuzzkv calibrate`` measures and stores one of every oracle; ``fuzzkv run`` uses the stored baseline whose
configuration and library versions match and which measured the run's oracles, or measures those and stores
the result. A newer
library whose measured noise grew by more than ``NOISE_GROWTH_LIMIT`` times is itself a
regression, and is reported as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fuzzkv.backends.interface import Backend
from fuzzkv.config import RunConfig
from fuzzkv.db import BaselineRecord, Store
from fuzzkv.tolerance import Progress, calibrate, calibrated_oracles, covered_oracles
from fuzzkv.verdict import Tolerance, fixed

NOISE_GROWTH_LIMIT = 4.0
# Only these change the numbers a model computes; a new Python or Hypothesis does not.
NUMERIC_LIBRARIES = ("torch", "transformers", "transformer_lens", "calibration")
# The measuring method: a baseline measured another way is not reused (nor compared for growth).
CALIBRATION_METHOD = "spread-validated-v2"  # v2: unchecked comparisons never in the spread; exact repeats


def baseline_key(config: RunConfig, backend: Backend) -> tuple[str, str, str, str, str, str]:
    return (backend.info.name, config.scale, backend.name, config.dtype, config.device, config.attn)


def same_numerics(a: dict, b: dict) -> bool:
    return all(a.get(lib) == b.get(lib) for lib in NUMERIC_LIBRARIES)


@dataclass(frozen=True)
class NoiseGrowth:
    """Measured noise grew past the limit between two library versions."""

    factor: float
    before: BaselineRecord
    after: BaselineRecord

    def message(self) -> str:
        changed = ", ".join(f"{lib} {self.before.versions.get(lib)} -> {self.after.versions.get(lib)}"
                            for lib in NUMERIC_LIBRARIES if self.before.versions.get(lib) != self.after.versions.get(lib))
        return (f"numerical noise grew {self.factor:.1f}x ({self.before.noise:.2g} -> {self.after.noise:.2g}) "
                f"after {changed or 'a library change'}: that is itself a regression")


def from_baseline(baseline: BaselineRecord) -> Tolerance:
    when = baseline.created.strftime("%Y-%m-%d %H:%M UTC")
    if baseline.calibration_prompts == 0:  # its calibration compared nothing: the value was estimated
        source = (f"stored baseline #{baseline.id} of {when}, estimated, not calibrated: no comparison measured "
                  f"rounding, so {baseline.safety_factor:g} x an estimate from the dtype's resolution at logit scale "
                  f"{baseline.logit_scale:.3g}")
    else:
        source = (f"stored baseline #{baseline.id} measured {when}: {baseline.safety_factor:g} x the largest "
                  f"cached-vs-uncached difference (max {baseline.noise:.2g}, rms {baseline.rms_noise or 0:.2g}) "
                  f"at logit scale {baseline.logit_scale:.3g}")
    return Tolerance(baseline.value, source, baseline.noise, baseline.logit_scale, baseline.safety_factor,
                     baseline.calibration_prompts, baseline.rms_value, baseline.rms_noise)


def measure(config: RunConfig, backend: Backend, store: Store, versions: dict,
            oracles: Sequence[str] | None = None, progress: Progress | None = None) -> tuple[Tolerance, NoiseGrowth | None]:
    """Calibrate ``oracles`` now (None: every oracle calibration measures on the backend), store the baseline, and
    compare with the last one from other library versions that measured the same oracles."""
    every = tuple(calibrated_oracles(backend))
    measuring = tuple(oracles) if oracles is not None else every
    tolerance = calibrate(backend, config.dtype, max_prompt_len=config.prompt_len_cap,
                          max_new_tokens=config.new_tokens_cap, deadline=config.deadline, oracles=measuring,
                          progress=progress)
    key = baseline_key(config, backend)
    record = BaselineRecord(*key, versions=versions, value=tolerance.value, noise=tolerance.noise,
                            rms_value=tolerance.rms_value, rms_noise=tolerance.rms_noise,
                            logit_scale=tolerance.logit_scale, safety_factor=tolerance.safety_factor,
                            calibration_prompts=tolerance.calibration_prompts, oracles=measuring)
    # Noise is compared like for like: more oracles measured can only mean more noise.
    earlier = next((b for b in store.baselines(key) if not same_numerics(b.versions, versions)
                    and b.versions.get("calibration") == versions.get("calibration")
                    and set(b.oracles if b.oracles is not None else every) == set(measuring)), None)
    store.save_baseline(record)
    growth = None
    if earlier is not None and earlier.noise > 0 and tolerance.noise > NOISE_GROWTH_LIMIT * earlier.noise:
        growth = NoiseGrowth(tolerance.noise / earlier.noise, earlier, store.baselines(key)[0])
    return tolerance, growth


def choose(config: RunConfig, backend: Backend, store: Store, versions: dict,
           progress: Progress | None = None) -> tuple[Tolerance, NoiseGrowth | None]:
    """The tolerance for a run: --tolerance, else a matching stored baseline that measured every oracle the run
    needs on the backend, else a new measurement of those oracles only: a full-size model's calibration is most of
    its run's time, and a run's oracles are best held to the spread of the paths they compare."""
    if config.tolerance is not None:
        return fixed(config.tolerance), None
    needed = covered_oracles(backend, config.oracles)
    for baseline in store.baselines(baseline_key(config, backend)):
        if same_numerics(baseline.versions, versions) and covers(baseline, needed):
            return from_baseline(baseline), None
    return measure(config, backend, store, versions, needed, progress)


def covers(baseline: BaselineRecord, oracles: Sequence[str]) -> bool:
    """Whether ``baseline`` measured every one of ``oracles`` (one stored before fuzzkv recorded which measured all)."""
    return baseline.oracles is None or set(oracles) <= set(baseline.oracles)
