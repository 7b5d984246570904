"""``fuzzkv run --workers N``: processes with their own model copies, one shared database,
results merged without duplicates."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fuzzkv import events
from fuzzkv.case import Case
from fuzzkv.verdict import Verdict
from fuzzkv.workers import Merger

ROOT = Path(__file__).parent.parent


def _fuzzkv(*args):
    return subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.slow
def test_two_workers_store_each_failure_once_and_report_it_once(tmp_path):
    db = tmp_path / "shared.db"
    done = _fuzzkv("run", "--model", "tests.broken_models:off_by_one_positions", "--scale", "tiny", "--oracle",
                   "decode", "--oracle", "chunked", "--max-examples", "30", "--workers", "2", "--db",
                   f"sqlite:///{db}", "--json")
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    fingerprints = [f["fingerprint"] for f in result["failures"]]
    assert sorted(f["oracle"] for f in result["failures"]) == ["chunked", "decode"]
    assert len(fingerprints) == len(set(fingerprints))
    assert all(f["novelty"] == "new" for f in result["failures"])
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT fingerprint FROM failures").fetchall()
        runs = conn.execute("SELECT settings FROM runs").fetchall()
        baselines = conn.execute("SELECT COUNT(*) FROM baselines").fetchone()[0]
    assert sorted(r[0] for r in rows) == sorted(fingerprints)  # one row per failure, both workers' finds merged
    assert sorted(json.loads(r[0])["seed"] for r in runs) == [0, 1]  # each worker its own seed
    assert baselines == 1  # calibrated once: the second worker waited for the first's baseline
    assert result["examples"] == sum(o["examples"] for o in result["oracles"].values())


def test_workers_need_a_shared_database_and_report_bad_models_once(tmp_path):
    memory = _fuzzkv("run", "--model", "llama", "--workers", "2", "--db", "memory:")
    assert memory.returncode == 2 and memory.stderr.count("\n") == 1 and "--workers needs a database" in memory.stderr
    unknown = _fuzzkv("run", "--model", "blom-560m", "--workers", "2", "--db", f"sqlite:///{tmp_path / 'x.db'}")
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.count("\n") == 1 and "did you mean bloom-560m" in unknown.stderr


def _found(fingerprint: str, novelty: str) -> events.FailureFound:
    verdict = Verdict("decode", Case(prompts=((1,),)), "mismatch", 1e-4)
    return events.FailureFound(verdict, "", fingerprint, 1, "hf", novelty)


def test_the_merger_shows_each_oracle_once_after_every_worker_and_prefers_the_news():
    shown = []
    merge = Merger(2, shown.append)
    start = events.OracleStarted("decode", "d")
    for worker, novelty in ((0, "known"), (1, "new")):
        merge(events.RunStarted({"model": "m"}, {}, "", "hf"))
        merge(start)
        merge(_found("same", novelty))
        assert [type(e).__name__ for e in shown] == ["RunStarted"]  # nothing until both finished the oracle
        merge(events.OracleFinished("decode", 10 + worker, 1, 1.0, first_failure_at=5 - worker))
    kinds = [type(e).__name__ for e in shown]
    assert kinds == ["RunStarted", "OracleStarted", "FailureFound", "OracleFinished"]
    assert shown[2].novelty == "new"
    assert (shown[3].examples, shown[3].failures, shown[3].first_failure_at) == (21, 1, 4)


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_records_each_run_as_interrupted(tmp_path, fault):
    fault("kill", "SIGINT (Ctrl-C) to a --workers 2 run")
    import signal
    import time

    db = tmp_path / "shared.db"
    process = subprocess.Popen([sys.executable, "-m", "fuzzkv", "run", "--model", "llama", "--scale", "tiny",
                                "--max-examples", "100000", "--max-time", "300", "--workers", "2", "--db",
                                f"sqlite:///{db}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # both workers have started their runs
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    if conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 2:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    time.sleep(2)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Interrupted: the run stopped early" in out and "Traceback" not in err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT outcome FROM runs").fetchall() == [("interrupted",), ("interrupted",)]


@pytest.mark.parametrize(("budget", "workers", "expected"), [("4", 2, 2), ("1", 2, 1), ("8", 3, 2), ("", 1, None),
                                                             ("lots", 1, None), ("0", 1, None)])
def test_workers_share_the_thread_budget_never_oversubscribing_it(monkeypatch, budget, workers, expected):
    from fuzzkv.config import threads_per_worker

    monkeypatch.setenv("OMP_NUM_THREADS", budget)
    cores = os.cpu_count() or 1
    assert threads_per_worker(workers) == (expected if expected is not None else max(1, cores // workers))
