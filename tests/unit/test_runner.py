"""The run, end to end on the fake backend: calibration, canaries, one search per oracle, the verdict."""

from __future__ import annotations

import pytest

from fuzzkv import canaries
from fuzzkv.db import MemoryStore
from fuzzkv.events import ExampleChecked
from tests.fake_backend import fake_lanes
from tests.unit.conftest import fuzz_fake

SEARCHED = ["decode", "batch", "chunked", "cache-reuse", "generate"]  # the default oracles the fake can run


def test_a_clean_fake_runs_clean_after_calibration_and_every_canary_caught():
    finished, events, store = fuzz_fake()
    assert finished.failures == [] and finished.blind == {} and not finished.untested and not finished.interrupted
    [tolerance] = events.of("ToleranceChosen")
    assert tolerance.lane == "fake" and tolerance.source.startswith("calibrated: 4 x the largest difference")
    assert 0 < tolerance.value < 1e-3 and tolerance.rms_value is not None  # rounding, measured
    [seen] = events.of("CanariesChecked")
    assert seen.caught == canaries.KINDS and seen.missed == () and seen.blind is None
    [skipped] = events.of("OracleSkipped")  # the fake declares no static cache
    assert (skipped.oracle, skipped.lane, skipped.reason) == ("cache-impl", "fake", "the backend has no static-cache")
    done = events.of("OracleFinished")
    assert [d.oracle for d in done] == SEARCHED and all(d.failures == 0 and not d.stopped_by_time for d in done)
    assert finished.examples == sum(d.examples for d in done) > 100
    [row] = store.runs()
    assert (row["outcome"], row["failures"], row["examples"]) == ("clean", 0, finished.examples)


def test_a_planted_bug_is_found_by_the_oracles_whose_paths_differ_and_only_those():
    # Off by one on cached steps: decode (vs uncached), chunked (a cached second chunk) and generate see it; batch
    # and cache-reuse compare two paths that are wrong alike, and pass.
    finished, events, store = fuzz_fake("positions-off-by-one")
    assert sorted(f.verdict.oracle for f in finished.failures) == ["chunked", "decode", "generate"]
    assert {d.oracle: d.failures for d in events.of("OracleFinished")} == {
        "decode": 1, "batch": 0, "chunked": 1, "cache-reuse": 0, "generate": 1}
    assert all(f.verdict.kind == "mismatch" and f.lane == "fake" and f.novelty == "new" and f.status == "open"
               for f in finished.failures)
    assert finished.blind == {} and events.of("CanariesChecked")[0].missed == ()
    [row] = store.runs()
    assert (row["outcome"], row["failures"]) == ("failures", 3)
    stored = {r.oracle: r for r in store.failures()}
    for found in finished.failures:
        record = stored[found.verdict.oracle]
        assert record.case == found.verdict.case and record.id == found.stored_id and record.backend == "fake"
        assert record.reproduction.startswith("# fuzzkv reproduction on the FAKE backend")
        assert record.diagnosis["unavailable"]  # the fake has no torch module to hook: said, not raised


def test_an_oracle_the_backend_cannot_run_is_skipped_and_a_run_of_nothing_is_untested():
    lanes = fake_lanes(unsupported={"tl": "TransformerLens cannot convert a fake"})
    finished, events, _ = fuzz_fake(lanes=lanes, oracles=("cache-impl",))
    assert [(e.lane, e.reason) for e in events.of("BackendUnsupported")] == [("tl", "TransformerLens cannot convert a fake")]
    assert [e.oracle for e in events.of("OracleSkipped")] == ["cache-impl"] and events.of("OracleStarted") == []
    assert finished.examples == 0 and finished.untested  # never "clean"
    ran, _, _ = fuzz_fake(oracles=("decode",), max_examples=5)
    assert ran.examples > 0 and not ran.untested


def test_a_run_that_cannot_see_is_blind_never_clean():
    # At a tolerance of 5 logits, no planted canary (about 0.05 to 2 logits) can be seen.
    finished, events, _ = fuzz_fake(oracles=("decode",), tolerance=5.0, max_examples=10)
    [seen] = events.of("CanariesChecked")
    assert seen.caught == () and [m.split(" ")[0] for m in seen.missed] == list(canaries.KINDS)
    assert finished.failures == [] and finished.blind["fake"].startswith("planted bugs went unseen at tolerance 5")
    calibrated, _, _ = fuzz_fake(oracles=("decode",), max_examples=10)
    assert calibrated.blind == {}


def test_the_same_seed_draws_the_same_cases_and_finds_the_same_minimal_case():
    runs = [fuzz_fake("batch-of-three", oracles=("decode", "batch"), seed=7) for _ in range(2)]
    (first, first_events, _), (second, second_events, _) = runs
    assert [f.verdict.case for f in first.failures] == [f.verdict.case for f in second.failures] != []
    assert [e.total_examples for e in first_events.of("ExampleChecked")] == \
        [e.total_examples for e in second_events.of("ExampleChecked")]


def test_max_time_bounds_the_search():
    finished, events, _ = fuzz_fake(oracles=("decode",), max_examples=100_000, max_time=1.0)
    [done] = events.of("OracleFinished")
    assert done.stopped_by_time and done.elapsed < 10 and finished.failures == []


def test_ctrl_c_mid_search_ends_the_run_interrupted_keeping_what_it_stored():
    store = MemoryStore()

    def press_ctrl_c_once_a_failure_is_stored(event: object) -> None:
        # The first failing example is committed as soon as it is seen, before shrinking ends.
        if isinstance(event, ExampleChecked) and store.failures():
            raise KeyboardInterrupt

    finished, _, _ = fuzz_fake("past-long-sequence", oracles=("decode", "batch"), store=store,
                               emit=press_ctrl_c_once_a_failure_is_stored)
    assert finished.interrupted and finished.failures == []  # stopped while shrinking: none finished
    [record] = store.failures()
    assert finished.shrinking == (record.id,) and record.oracle == "decode" and record.case.total_length > 1
    assert store.runs()[0]["outcome"] == "interrupted"


@pytest.mark.parametrize("status_between, second", [("open", "known"), ("fixed", "reopened")])
def test_a_failure_is_new_then_known_and_reopened_once_marked_fixed(status_between, second):
    first, _, store = fuzz_fake("positions-off-by-one", oracles=("decode",))
    [found] = first.failures
    assert found.novelty == "new" and found.is_news
    store.mark(found.stored_id, status_between)
    again, _, _ = fuzz_fake("positions-off-by-one", oracles=("decode",), store=store)
    [refound] = again.failures
    assert refound.novelty == second and refound.is_news == (second == "reopened")
    record = store.failure(found.stored_id)
    assert record is not None and (record.status, record.times_seen) == ("open", 2)
