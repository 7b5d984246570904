"""What a run leaves in the store, in memory and in a real SQLite file alike: its row, its shrunk failures,
Hypothesis's examples (replayed first by the next run) and the tolerance baseline (reused by the next run)."""

from __future__ import annotations

import pytest

from fuzzkv.baselines import CALIBRATION_METHOD
from fuzzkv.db import BaselineRecord, MemoryStore, Store, open_store
from tests.unit.conftest import fuzz_fake


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    opened = MemoryStore() if request.param == "memory" else open_store(f"sqlite:///{tmp_path / 'fuzz.db'}")
    yield opened
    opened.close()


@pytest.fixture
def reopened(tmp_path):
    """The same store read afresh: a new connection to the SQLite file (the memory store is itself)."""
    opened: list[Store] = []

    def reopen(store: Store) -> Store:
        if isinstance(store, MemoryStore):
            return store
        opened.append(open_store(f"sqlite:///{tmp_path / 'fuzz.db'}", create=False))
        return opened[-1]

    yield reopen
    for store in opened:
        store.close()


def test_a_run_stores_its_row_and_each_shrunk_failure(store, reopened):
    finished, events, _ = fuzz_fake("positions-off-by-one", oracles=("decode",), store=store)
    [found] = finished.failures
    again = reopened(store)
    [row] = again.runs()
    assert (row["id"], row["outcome"], row["failures"], row["examples"]) == (finished.run_id, "failures", 1,
                                                                             finished.examples)
    assert row["settings"]["model"] == "fake" and row["versions"]["calibration"] == CALIBRATION_METHOD
    [record] = again.failures()
    assert (record.id, record.run_id, record.status, record.times_seen) == (found.stored_id, finished.run_id, "open", 1)
    assert (record.model, record.backend, record.oracle, record.kind) == ("fake", "fake", "decode", "mismatch")
    assert record.case == found.verdict.case and record.fingerprint == found.fingerprint
    assert record.max_abs_diff == found.verdict.metrics.max_abs_diff > record.tolerance
    # Every calibration comparison of this broken fake differs in float64 too: none is rounding, so the tolerance is
    # estimated from the dtype's resolution, and the source stored with the failure says so.
    assert record.settings["backend"] == "fake" and record.tolerance_source.startswith("estimated, not calibrated")
    assert record.metrics["per_position"] and "torch" in record.versions
    clean, _, clean_store = fuzz_fake(oracles=("decode",))
    assert clean.failures == [] and clean_store.failures() == [] and clean_store.runs()[0]["outcome"] == "clean"


def test_the_next_run_replays_the_stored_example_first_and_reuses_the_baseline(store, reopened):
    # The bug needs a long sequence: the first run's first examples (short ones) pass.
    first, first_events, _ = fuzz_fake("past-long-sequence", oracles=("decode",), store=store)
    assert first_events.of("OracleFinished")[0].first_failure_at > 1
    assert first_events.of("ToleranceChosen")[0].source.startswith("calibrated")
    second, second_events, _ = fuzz_fake("past-long-sequence", oracles=("decode",), store=reopened(store))
    assert second_events.of("OracleFinished")[0].first_failure_at == 1
    assert second_events.of("ToleranceChosen")[0].source.startswith("stored baseline #1 measured")
    assert [f.verdict.case for f in second.failures] == [f.verdict.case for f in first.failures]
    [record] = reopened(store).failures()
    assert record.times_seen == 2 and second.failures[0].novelty == "known"  # the same fingerprint, not a new row


def test_calibration_stores_a_baseline_and_flags_noise_grown_since_older_libraries(store, reopened):
    key, oracles = ("fake", "full", "fake", "float32", "cpu", "eager"), ("decode", "batch")
    _, events, _ = fuzz_fake(oracles=oracles, max_examples=5)
    assert events.of("ToleranceChosen")[0].regression is None  # nothing measured before to compare with
    # The same configuration measured under an older torch with almost no noise: noise grown that much is itself
    # a regression.
    store.save_baseline(BaselineRecord(*key, versions={"torch": "2.0.0", "calibration": CALIBRATION_METHOD},
                                       value=4e-12, noise=1e-12, logit_scale=15.0, safety_factor=4.0,
                                       calibration_prompts=10, oracles=oracles))
    _, events, _ = fuzz_fake(oracles=oracles, store=store, max_examples=5)
    [chosen] = events.of("ToleranceChosen")
    assert chosen.source.startswith("calibrated") and chosen.regression is not None
    assert chosen.regression.startswith("numerical noise grew") and "torch 2.0.0 ->" in chosen.regression
    [measured, older] = reopened(store).baselines(key)  # newest first
    assert measured.oracles == oracles and measured.noise > 1e-9 and older.versions["torch"] == "2.0.0"


def test_a_search_stopped_by_time_leaves_nothing_in_the_failure_corpus():
    # Hypothesis saves the example in progress when a test raises a BaseException other than KeyboardInterrupt;
    # a time stop must not look like a failure to the next run. (".secondary" and ".pareto" keys are its
    # ordinary corpus.)
    finished, events, store = fuzz_fake(oracles=("decode",), max_examples=100_000, max_time=0.5)
    assert events.of("OracleFinished")[0].stopped_by_time and finished.failures == []
    assert isinstance(store, MemoryStore)
    primary = [key for key in store._examples if not key.endswith((b".secondary", b".pareto"))]
    assert all(store.example_fetch(key) == [] for key in primary), primary
    # A failure, by contrast, is kept there for the next run to replay first.
    _, _, failed = fuzz_fake("positions-off-by-one", oracles=("decode",))
    assert isinstance(failed, MemoryStore)
    assert any(failed.example_fetch(key) for key in failed._examples if not key.endswith((b".secondary", b".pareto")))
