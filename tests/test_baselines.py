"""Tolerance baselines cover the oracles a run asks for: measured for those only, reused by every run they cover."""

from __future__ import annotations

import re
import sqlite3

import pytest

from fuzzkv.backends.loader import load_lanes
from fuzzkv.baselines import from_baseline
from fuzzkv.config import RunConfig
from fuzzkv.db import BaselineRecord, MemoryStore, open_store
from fuzzkv.runner import run
from fuzzkv.tolerance import calibrate, calibrated_oracles, covered_oracles
from tests.conftest import Recorder

KEY = ("llama", "tiny", "hf", "float32", "cpu", "eager")


def tolerance_of_run(store, *oracles: str):
    """The ToleranceChosen event of a short run of the tiny llama with ``oracles`` (none: the default set)."""
    config = RunConfig(model="llama", scale="tiny", db_url="memory:", oracles=oracles, max_examples=5)
    recorder = Recorder()
    run(config, store, recorder.append, load_lanes(config))
    [chosen] = recorder.of("ToleranceChosen")
    return chosen


@pytest.fixture(scope="module")
def llama():
    config = RunConfig(model="llama", scale="tiny", db_url="memory:")
    return load_lanes(config).lanes["hf"].backends[0]


def test_a_run_calibrates_its_own_oracles_and_a_baseline_serves_every_run_it_covers(llama):
    store = MemoryStore()
    decode_only = tolerance_of_run(store, "decode")
    [first] = store.baselines(KEY)
    assert first.oracles == ("decode",)
    assert "comparisons of decode (" in decode_only.source  # says what it measured, since the others were not

    default = tolerance_of_run(store)  # the default set: decode's baseline does not cover it, so it is measured
    newest = store.baselines(KEY)[0]
    assert newest.id != first.id and set(newest.oracles) == set(calibrated_oracles(llama))
    assert "comparisons (" in default.source  # every oracle: nothing to qualify
    # The same comparisons and more: the largest rounding among them can only be as large or larger.
    assert decode_only.value <= default.value

    subset = tolerance_of_run(store, "decode", "batch")  # covered by the default set's baseline: reused
    assert subset.source.startswith(f"stored baseline #{newest.id} ")
    assert subset.value == default.value and len(store.baselines(KEY)) == 2


@pytest.mark.parametrize(("requested", "covered"), [
    (("decode", "chunked"), ("decode", "chunked")),
    (("chunked", "decode"), ("decode", "chunked")),  # in the oracles' own order, so equal sets store alike
    ((), None),  # the default set
    (("decode", "beam"), None),  # beam has no calibration cases: held to the spread of all the others
    (("cross",), None),  # the backend is one side of a cross lane: its whole spread
    (("tl-decode",), None),  # runs on TransformerLens only
])
def test_the_oracles_a_tolerance_covers(llama, requested, covered):
    assert covered_oracles(llama, requested) == (covered or tuple(calibrated_oracles(llama)))


def test_a_baseline_remembers_what_it_measured_and_bad_stored_data_is_a_miss(tmp_path):
    from fuzzkv.baselines import covers

    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    store = open_store(url)
    try:
        for oracles in [("decode", "batch"), None, ("decode",)]:
            store.save_baseline(BaselineRecord(*KEY, {"torch": "2.13.0"}, 1e-4, 2e-5, 7.0, 4.0, 14, oracles=oracles))
        assert [b.oracles for b in store.baselines(KEY)] == [("decode",), None, ("decode", "batch")]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / "fuzz.db") as db:  # a value no fuzzkv wrote
        db.execute("UPDATE baselines SET oracles = '\"decode\"' WHERE id = 3")
    store = open_store(url, create=False)
    try:
        damaged, older, oldest = store.baselines(KEY)
        assert damaged.oracles == () and not covers(damaged, ("decode",))
        assert covers(older, ("decode", "generate"))  # stored before fuzzkv recorded it: it measured every oracle
        assert covers(oldest, ("batch",)) and not covers(oldest, ("chunked",))
    finally:
        store.close()


@pytest.mark.parametrize(("earlier_measured", "compared"), [(("decode",), True), (("batch",), False)])
def test_noise_growth_compares_baselines_of_the_same_oracles_only(llama, earlier_measured, compared):
    from fuzzkv.baselines import CALIBRATION_METHOD, measure

    now, before = ({"torch": torch, "calibration": CALIBRATION_METHOD} for torch in ("2.13.0", "2.0.0"))
    store = MemoryStore()  # the same configuration measured under an older torch, with far less noise than now
    store.save_baseline(BaselineRecord(*KEY, before, 1e-9, 1e-10, 7.0, 4.0, 14, oracles=earlier_measured))
    config = RunConfig(model="llama", scale="tiny", db_url="memory:")
    tolerance, growth = measure(config, llama, store, now, ("decode",))
    assert tolerance.noise > 4 * 1e-10  # the tiny llama's float32 rounding: far past the planted older noise
    assert (growth is not None) == compared  # batch's noise says nothing about decode's


def test_a_clean_models_left_out_comparisons_are_said_unchecked_not_bugs(llama):
    # The tiny llama's ragged padded batch is NaN in float64 (fully masked padding rows): those comparisons cannot be
    # checked there. The source said "1 left out: their paths differ in float64 too (a bug?)" on this clean model.
    tolerance = calibrate(llama, "float32", max_prompt_len=24, max_new_tokens=12, oracles=["decode"])
    count = tolerance.left_out
    assert count >= 1 and tolerance.calibration_prompts > 0
    assert (f"; {count} left out unchecked, not as bugs: padded rows non-finite in float64 ({count})"
            in tolerance.source), tolerance.source
    assert "bug?" not in tolerance.source and "differ in float64" not in tolerance.source


def test_comparisons_whose_paths_differ_in_float64_too_are_left_out_and_counted():
    config = RunConfig(model="tests.broken_models:off_by_one_positions", scale="tiny", db_url="memory:")
    broken = load_lanes(config).lanes["hf"].backends[0]
    tolerance = calibrate(broken, "float32", max_prompt_len=24, max_new_tokens=12, oracles=["decode"])
    differing = re.search(r"(\d+) left out as not rounding: their paths differ in float64 too", tolerance.source)
    assert differing is not None and int(differing.group(1)) >= 1, tolerance.source  # a real count, never hidden
    assert tolerance.left_out >= int(differing.group(1))


def test_a_tolerance_that_compared_nothing_says_it_is_an_estimate_and_why(llama, monkeypatch):
    # Every calibration path raised (as TransformerLens 4.3's bridge does on transformers 5.24+: SilentlyUncached):
    # the source read "calibrated: ... over 0 comparisons (max 0, rms 0; logit scale 0)".
    def uncached(case):
        raise RuntimeError("this cache stores nothing")

    monkeypatch.setattr(llama, "cached", uncached)
    tolerance = calibrate(llama, "float32", oracles=["decode"])
    assert tolerance.calibration_prompts == 0
    assert tolerance.source.startswith("estimated, not calibrated: no comparison of decode measured rounding, so 4 x 8 "
                                       "x float32 resolution x logit scale 0 (no calibration case ran)"), tolerance.source
    assert "over 0 comparisons" not in tolerance.source and "decode raised RuntimeError" in tolerance.source
    stored = from_baseline(BaselineRecord(*KEY, {}, tolerance.value, tolerance.noise, 0.0, 4.0, 0, id=7))
    assert stored.source.startswith("stored baseline #7 of ") and "estimated, not calibrated" in stored.source

