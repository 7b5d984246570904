"""Replay: a stored failure re-run without Hypothesis, on the broken fake (still fails) and on the clean one
(fixed), and its reproduction script run as it is stored."""

from __future__ import annotations

import io
import json
import sys
import types

import pytest

from fuzzkv import replay as replay_module
from fuzzkv.config import RunConfig
from fuzzkv.db import Store, open_store
from fuzzkv.events import ReplayFinished
from fuzzkv.replay import replay
from fuzzkv.reports.console import ReplayConsoleReporter
from fuzzkv.reports.json_report import ReplayJsonReporter
from fuzzkv.verdict import Bounds
from tests.conftest import Recorder
from tests.fake_backend import FakeBackend, fake_lanes
from tests.unit.conftest import fuzz_fake


def rebuild_as(monkeypatch, *bugs: str) -> None:
    """Replay rebuilds a stored failure's model from its settings through the loader, which knows the real
    libraries only: here it gets the fake with ``bugs`` (none: the bug fixed), the rest of replay as it is."""

    def rebuilt(settings: dict, lane: str, deadline: float | None, trust_remote_code: bool = False):
        assert lane == "fake" and settings["model"] == "fake"
        # RunConfig takes the real libraries' --backend values only; the lane is the fake's all the same.
        return RunConfig(**{**settings, "backend": "hf"}, db_url="memory:", deadline=deadline), fake_lanes(*bugs)

    monkeypatch.setattr(replay_module, "_rebuild", rebuilt)


@pytest.fixture
def stored(tmp_path):
    """A real SQLite file holding the failures a run found on the fake with positions off by one."""
    store = open_store(f"sqlite:///{tmp_path / 'fuzz.db'}")
    finished, _, _ = fuzz_fake("positions-off-by-one", oracles=("decode", "chunked"), store=store)
    assert len(finished.failures) == 2
    yield store
    store.close()


def replayed(store: Store, include_fixed: bool = False) -> tuple[ReplayFinished, Recorder, str, dict]:
    """Replay ``store``; returns (ReplayFinished, its events, the console's lines, the JSON report)."""
    events, console, out = Recorder(), io.StringIO(), io.StringIO()
    reporters = (events.append, ReplayConsoleReporter(console, tty=False), ReplayJsonReporter(out))

    def emit(event: object) -> None:
        for reporter in reporters:
            reporter(event)

    finished = replay(store, emit, include_fixed=include_fixed)
    return finished, events, console.getvalue(), json.loads(out.getvalue())


def test_a_stored_failure_still_fails_then_is_fixed_then_reopened(stored, monkeypatch):
    rebuild_as(monkeypatch, "positions-off-by-one")
    finished, events, console, report = replayed(stored)
    assert (finished.failing, finished.fixed, finished.skipped) == (2, 0, 0)
    assert console.count("STILL FAILS - ") == 2 and "replay: 2 still failing, 0 fixed, 0 skipped" in console
    assert [entry["outcome"] for entry in report["replayed"]] == ["fails", "fails"] and report["failing"] == 2
    assert all(r.status == "open" and r.times_seen == 2 for r in stored.failures())

    rebuild_as(monkeypatch)  # the bug fixed
    finished, _, console, report = replayed(stored)
    assert (finished.failing, finished.fixed) == (0, 2) and console.count(": fixed - passes now") == 2
    assert report["fixed"] == 2 and {r.status for r in stored.failures(status="fixed")} == {"fixed"}
    assert replayed(stored)[0].fixed == 0  # a fixed failure is not replayed again by default...

    rebuild_as(monkeypatch, "positions-off-by-one")  # ...unless asked: the bug is back
    finished, _, console, _ = replayed(stored, include_fixed=True)
    assert (finished.failing, finished.reopened) == (0, 2) and console.count("REOPENED (was fixed)") == 2
    assert {r.status for r in stored.failures()} == {"open"}


def test_replay_measures_a_baseline_covering_every_oracle_once_then_reuses_it(stored, monkeypatch):
    # The run measured the oracles it ran; replay stands for every oracle, and settles the tolerance as a run of
    # the default set would: measured once, stored, then reused.
    key = ("fake", "full", "fake", "float32", "cpu", "eager")
    rebuild_as(monkeypatch, "positions-off-by-one")
    assert [b.oracles for b in stored.baselines(key)] == [("decode", "chunked")]
    for _ in range(2):
        _, events, _, _ = replayed(stored)
        newest, _ = stored.baselines(key)
        assert newest.oracles == ("decode", "batch", "chunked", "cache-reuse", "generate")
        assert {e.verdict.tolerance for e in events.of("ReplayChecked")} == {newest.value}


def test_without_a_test_rebuilding_it_the_fake_is_skipped_it_is_no_library(stored, monkeypatch):
    # The loader imports transformers: a stand-in shows replay never reaches it for a lane it does not know.
    loader = types.ModuleType("fuzzkv.backends.loader")
    loader.load_lanes = lambda *_: pytest.fail("replay tried to load the fake's lanes")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fuzzkv.backends.loader", loader)
    finished, events, console, _ = replayed(stored)
    assert (finished.failing, finished.fixed, finished.skipped) == (0, 0, 2)
    [skipped] = events.of("ReplaySkipped")
    assert skipped.reason == "backend 'fake' is not known to this fuzzkv" and "skipped - backend 'fake'" in console


def test_the_stored_reproduction_script_fails_on_the_broken_fake_and_passes_on_the_clean_one(stored, capsys):
    record = stored.failures()[0]
    assert record.reproduction.startswith("# fuzzkv reproduction on the FAKE backend")
    with pytest.raises(SystemExit) as broken:
        exec(compile(record.reproduction, "repro.py", "exec"), {})
    assert broken.value.code == 1 and "max |diff|" in capsys.readouterr().out
    clean = FakeBackend().reproduction(record.oracle, "", record.case, Bounds(record.tolerance))
    with pytest.raises(SystemExit) as fixed:
        exec(compile(clean, "repro.py", "exec"), {})
    assert fixed.value.code == 0
