"""Runs are reproducible, bounded, and reported the same way on every surface."""

import io

import pytest

from fuzzkv.config import RunConfig
from fuzzkv.errors import UsageError
from fuzzkv.reports.console import ConsoleReporter
from tests.conftest import fuzz


def test_same_seed_same_cases_and_same_findings():
    runs = [fuzz("tests.broken_models:batch_of_three", oracles=("batch",), max_examples=40, seed=7) for _ in range(2)]
    (first, first_events, _), (second, second_events, _) = runs
    assert [f.verdict.case for f in first.failures] == [f.verdict.case for f in second.failures]
    assert [e.examples for e in first_events.of("ExampleChecked")] == [e.examples for e in second_events.of("ExampleChecked")]


def test_max_time_bounds_the_search():
    finished, recorder, _ = fuzz("llama", oracles=("decode", "batch"), max_examples=100_000, max_time=4)
    for done in recorder.of("OracleFinished"):
        assert done.stopped_by_time
    assert finished.failures == []


def test_a_run_is_recorded_in_the_store():
    finished, _, store = fuzz("tests.broken_models:off_by_one_positions", oracles=("decode",), max_examples=20)
    [stored_run] = store.runs()
    assert stored_run["id"] == finished.run_id and stored_run["outcome"] == "failures"
    [record] = store.failures()
    assert record.run_id == finished.run_id and record.oracle == "decode"
    assert "transformers" in record.versions and record.reproduction.startswith("# fuzzkv reproduction")


def test_sdpa_attention_runs_clean_where_supported():
    finished, _, _ = fuzz("llama", attn="sdpa", max_examples=15)
    assert finished.failures == []


def test_sdpa_on_a_model_without_it_is_a_usage_error():
    with pytest.raises(UsageError, match="does not support --attn sdpa"):
        fuzz("bloom-560m", attn="sdpa", max_examples=1)


def test_plain_console_output_names_each_failure_and_how_to_reproduce_it():
    from fuzzkv.runner import run
    from fuzzkv.db import MemoryStore

    out = io.StringIO()
    config = RunConfig(model="tests.broken_models:off_by_one_positions", oracles=("decode",), scale="tiny",
                       max_examples=20, db_url="memory:")
    run(config, MemoryStore(), ConsoleReporter(out, tty=False))
    text = out.getvalue()
    assert "\r" not in text  # no progress redraws when not on a terminal
    assert "FAILURE [mismatch] decode (cached vs uncached): max |diff|" in text
    assert "minimal case: batch 1 (lengths 1), left-padded, 2 new token(s)" in text
    assert "reproduce: save the script below as repro.py" in text
    assert "1 failure(s) (1 mismatch) in" in text


def test_terminal_output_redraws_one_progress_line():
    from fuzzkv import events

    out = io.StringIO()
    reporter = ConsoleReporter(out, tty=True)
    reporter(events.ExampleChecked("decode", 3, 3, 0, 1.5))
    reporter(events.OracleFinished("decode", 3, 0, 1.6))
    text = out.getvalue()
    assert text.startswith("\r\033[K  decode: 3 examples, 0 failure(s), 1.5s")
    assert text.endswith("\r\033[K  decode: ok after 3 examples in 1.6s\n")
