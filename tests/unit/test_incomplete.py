"""Nothing untested is called ok (issue #32): an oracle that ran fewer examples than asked is incomplete, and so is
one asked for by name that could not run; a run with such an oracle and no failure is "incomplete" (exit 6)."""

from __future__ import annotations

import io
import time

import pytest

from fuzzkv.api import IncompleteRun, Result
from fuzzkv.errors import EXIT_INCOMPLETE, EXIT_OK
from fuzzkv.reports.console import ConsoleReporter
from tests.unit.conftest import fuzz_fake


def test_an_oracle_stopped_by_max_time_before_its_floor_of_examples_is_incomplete_never_ok():
    # As if building the model had taken 100 s of a 60 s budget: calibration runs, no oracle gets any time.
    shown = io.StringIO()
    finished, events, _ = fuzz_fake(oracles=("decode", "batch"), max_time=60.0, started=time.monotonic() - 100,
                                    emit=ConsoleReporter(shown, tty=False))
    assert [(e.oracle, e.examples, e.stopped_by_time) for e in events.of("OracleFinished")] == [
        ("decode", 0, True), ("batch", 0, True)]
    why = "0 examples, fewer than the 20 a time-boxed oracle must run: --max-time ran out"
    assert finished.incomplete == {"decode@fake": why, "batch@fake": why} and finished.failures == []
    text = shown.getvalue()
    assert "decode [fake]: INCOMPLETE" in text and "batch [fake]: INCOMPLETE" in text and ": ok" not in text
    assert "INCOMPLETE, not clean: decode@fake: 0 examples" in text


def test_an_oracle_stopped_by_max_time_past_its_floor_is_tested_and_says_it_was_stopped():
    shown = io.StringIO()
    finished, events, _ = fuzz_fake(oracles=("decode",), max_examples=100_000, max_time=3.0, tolerance=1e-3,
                                    emit=ConsoleReporter(shown, tty=False))
    [done] = events.of("OracleFinished")
    assert done.stopped_by_time and 20 <= done.examples < 100_000 and done.incomplete is None
    assert finished.incomplete == {} and "stopped by --max-time" in shown.getvalue()


def test_the_time_left_is_shared_by_every_oracle_not_spent_on_the_first():
    # A given tolerance (no calibration) keeps the test's time about the search alone, on a loaded machine too.
    finished, events, _ = fuzz_fake(oracles=("decode", "batch", "chunked"), max_examples=100_000, max_time=6.0,
                                    tolerance=1e-3)
    done = events.of("OracleFinished")
    assert [e.oracle for e in done] == ["decode", "batch", "chunked"]
    # Each got about 2 s of the 6: every one past the floor, none spent on the first alone.
    assert all(e.examples >= 20 and e.stopped_by_time for e in done), [(e.oracle, e.examples) for e in done]
    assert finished.incomplete == {}


def test_an_oracle_asked_for_by_name_that_does_not_apply_is_incomplete_but_a_default_one_is_only_reported():
    named, _, _ = fuzz_fake(oracles=("decode", "cache-impl"), max_examples=5)
    assert named.examples > 0 and list(named.incomplete) == ["cache-impl@fake"]
    assert named.incomplete["cache-impl@fake"].startswith("not applicable: ")
    default, events, _ = fuzz_fake(max_examples=5)
    assert [e.oracle for e in events.of("OracleSkipped")] == ["cache-impl"] and default.incomplete == {}


def test_a_complete_run_has_nothing_incomplete():
    finished, events, _ = fuzz_fake(oracles=("decode",), max_examples=10)
    [done] = events.of("OracleFinished")
    assert done.examples == 10 and done.incomplete is None and finished.incomplete == {}


def test_an_incomplete_result_exits_6_and_raises_for_findings():
    result = Result("fake", (), 12, {}, False, False, {}, {}, None, {}, {"batch": "0 examples, fewer than the 20"})
    assert result.exit_code() == EXIT_INCOMPLETE == 6 and not result.clean
    with pytest.raises(IncompleteRun, match="batch: 0 examples, fewer than the 20"):
        result.raise_for_findings()
    assert Result("fake", (), 12, {}, False, False, {}, {}, None, {}).exit_code() == EXIT_OK


def test_cases_the_library_refuses_are_not_counted_as_tested():
    # A refused case (documented refusal, or a setting the library took and did not apply) tested nothing: an
    # oracle whose every case is refused ran 0 examples, and the run is incomplete, never clean.
    from fuzzkv.backends.interface import Refused
    from tests.fake_backend import FakeBackend, fake_lanes

    class RefusesEverything(FakeBackend):
        def cached(self, case, tokens=None, **options):
            raise Refused("generate(cache_implementation='hybrid') ran on a DynamicCache, not a static cache")

    lanes = fake_lanes()
    lanes.lanes["fake"].backend = RefusesEverything()
    finished, events, _ = fuzz_fake(oracles=("decode",), lanes=lanes, max_examples=10, tolerance=1e-3)
    [done] = events.of("OracleFinished")
    assert done.examples == 0 and done.incomplete == "0 of 10 examples: every case drawn was refused or discarded"
    assert finished.incomplete and not finished.failures
