"""Tolerance baselines cover the oracles a run asks for: measured for those only, reused by every run they cover."""

from __future__ import annotations

import sqlite3

import pytest

from fuzzkv.backends.loader import load_lanes
from fuzzkv.config import RunConfig
from fuzzkv.db import BaselineRecord, MemoryStore, open_store
from fuzzkv.runner import run
from fuzzkv.tolerance import calibrated_oracles, covered_oracles
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
