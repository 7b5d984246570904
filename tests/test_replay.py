"""The regression database end to end: a killed run keeps its failures, replay reproduces them,
a fixed model marks them fixed, and bad database files are refused without being touched."""

import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "from tests.broken_models import off_by_one_positions as make\n"
FIXED = "from tests.broken_models import clean as make\n"


def env():
    # No bytecode cache: the test rewrites mymodel.py within the same second.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def fuzzkv(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=cwd,
                          env=env(), timeout=600)


def stored_failures(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute("SELECT COUNT(*) FROM failures").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # tables not created yet


def test_sigkill_keeps_failures_replay_reproduces_then_marks_fixed(tmp_path, fault):
    fault("kill", "SIGKILL mid-run, then replay")
    (tmp_path / "mymodel.py").write_text(BROKEN)
    db = tmp_path / "fuzz.db"
    # decode and chunked find the off-by-one; cache-impl compares two equally broken paths and runs on.
    process = subprocess.Popen(
        [sys.executable, "-m", "fuzzkv", "run", "--model", "mymodel:make", "--oracle", "decode", "--oracle", "chunked",
         "--oracle", "cache-impl", "--max-examples", "100000", "--db", f"sqlite:///{db}"],
        cwd=tmp_path, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while stored_failures(db) < 2 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL  # killed mid-run, not finished

    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    listed = fuzzkv("failures", "--db", f"sqlite:///{db}", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert {f["oracle"] for f in found} == {"decode", "chunked"}
    assert all(f["status"] == "open" and f["kind"] == "mismatch" for f in found)

    replayed = fuzzkv("replay", "--db", f"sqlite:///{db}", cwd=tmp_path)
    assert replayed.returncode == 1, replayed.stderr
    assert replayed.stdout.count("STILL FAILS") == len(found)

    (tmp_path / "mymodel.py").write_text(FIXED)
    fixed = fuzzkv("replay", "--db", f"sqlite:///{db}", "--json", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    report = json.loads(fixed.stdout)
    assert report["fixed"] == len(found) and report["failing"] == 0
    statuses = json.loads(fuzzkv("failures", "--status", "all", "--db", f"sqlite:///{db}", "--json",
                                 cwd=tmp_path).stdout)
    assert {f["status"] for f in statuses} == {"fixed"}


@pytest.mark.nightly  # the unit tier's test_store covers it on the fake backend
def test_a_second_run_replays_the_stored_failure_first(tmp_path):
    db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    args = ("run", "--model", "tests.broken_models:off_by_one_positions", "--oracle", "decode", "--max-examples",
            "30", "--db", db, "--json")
    first = json.loads(fuzzkv(*args, cwd=ROOT).stdout)
    second = json.loads(fuzzkv(*args, cwd=ROOT).stdout)
    assert second["oracles"]["decode"]["first_failure_at"] == 1
    assert second["tolerance"]["source"].startswith("stored baseline #1")
    assert [f["case"] for f in second["failures"]] == [f["case"] for f in first["failures"]]
    [stored] = json.loads(fuzzkv("failures", "--db", db, "--json", cwd=ROOT).stdout)
    assert stored["times_seen"] == 2  # the same fingerprint updated, not duplicated


def test_show_prints_the_record_and_a_runnable_script(tmp_path):
    db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    fuzzkv("run", "--model", "tests.broken_models:off_by_one_positions", "--oracle", "decode", "--max-examples",
           "20", "--db", db, cwd=ROOT)
    shown = fuzzkv("show", "1", "--db", db, cwd=ROOT)
    assert shown.returncode == 0
    assert "minimal case: batch 1 (lengths 1)" in shown.stdout and "# fuzzkv reproduction" in shown.stdout
    assert "  where it breaks: " in shown.stdout
    script = fuzzkv("show", "1", "--script", "--db", db, cwd=ROOT)  # the script alone, for '> repro.py'
    assert script.returncode == 0 and script.stdout.startswith("# fuzzkv reproduction")
    # the run saved the same script beside its database, named by the failure's id
    assert script.stdout == (tmp_path / "fuzzkv-repro" / "failure-1.py").read_text()
    missing = fuzzkv("show", "99", "--db", db, cwd=ROOT)
    assert missing.returncode == 2 and "no stored failure with id 99" in missing.stderr


def test_calibrate_stores_a_baseline_and_flags_noise_growth(tmp_path):
    from fuzzkv.db import BaselineRecord, open_store

    db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    first = fuzzkv("calibrate", "--model", "llama", "--scale", "tiny", "--db", db, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "tolerance" in first.stdout and "largest difference between the compared paths" in first.stdout
    store = open_store(db)
    [measured] = store.baselines(("llama", "tiny", "hf", "float32", "cpu", "eager"))
    # The same configuration measured under an older torch, with far less noise than now.
    from fuzzkv.baselines import CALIBRATION_METHOD

    older = {"torch": "2.0.0", "calibration": CALIBRATION_METHOD}  # measured the same way
    store.save_baseline(BaselineRecord("llama", "tiny", "hf", "float32", "cpu", "eager", older,
                                       measured.value / 100, measured.noise / 100, measured.logit_scale, 16.0, 4))
    store.close()
    again = fuzzkv("calibrate", "--model", "llama", "--scale", "tiny", "--db", db, cwd=tmp_path)
    assert again.returncode == 1
    assert "REGRESSION: numerical noise grew" in again.stdout and "torch 2.0.0 ->" in again.stdout


@functools.cache
def _a_db_with_a_failure() -> bytes:
    """The bytes of a database a real run stored a failure in: made once per test process, each test its own copy
    (eight of the bad-file cases start from it; a run per case cost each about 20 s of a fuzzkv subprocess)."""
    path = Path(tempfile.mkdtemp(prefix="fuzzkv-db-")) / "fuzz.db"
    fuzzkv("run", "--model", "tests.broken_models:off_by_one_positions", "--oracle", "decode", "--max-examples",
           "10", "--db", f"sqlite:///{path}", cwd=ROOT)
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


def _fuzzkv_db_with_a_failure(tmp_path) -> Path:
    path = tmp_path / "fuzz.db"
    path.write_bytes(_a_db_with_a_failure())
    return path


def _truncated(tmp_path):
    path = _fuzzkv_db_with_a_failure(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 200)
    return path


def _other_schema_version(tmp_path):
    path = _fuzzkv_db_with_a_failure(tmp_path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE fuzzkv_schema SET version = 0")
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


@pytest.mark.parametrize("make_bad_file, message", [
    (_truncated, "cannot be opened as a database"),
    (_not_a_database, "cannot be opened as a database"),
    (_other_schema_version, "written by an older fuzzkv"),
])
@pytest.mark.parametrize("command", [["failures"], ["replay"], ["show", "1"],
                                     ["run", "--model", "llama", "--scale", "tiny", "--max-examples", "2"]])
def test_bad_database_files_give_one_line_exit_2_and_are_never_overwritten(tmp_path, make_bad_file, message, command,
                                                                           fault):
    fault("bad input", f"{command}: {message}")
    path = make_bad_file(tmp_path)
    before = path.read_bytes()
    result = fuzzkv(*command, "--db", f"sqlite:///{path}", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0]
    assert path.read_bytes() == before


def test_replay_skips_what_it_cannot_rebuild_and_says_why(tmp_path):
    from fuzzkv.case import Case
    from fuzzkv.db import FailureRecord, open_store

    db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    store = open_store(db)
    settings = {"model": "vanished_module:make", "backend": "hf", "scale": "tiny", "dtype": "float32",
                "device": "cpu", "attn": "eager", "init_std": 0.2, "weights_seed": 0}
    store.save_failure(FailureRecord("f1", "vanished_module:make", "hf", "decode", "mismatch", Case(prompts=((0,),)),
                                     1.0, 1e-4, {}, None, "", {}, settings=settings))
    store.close()
    result = fuzzkv("replay", "--db", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "failures 1: skipped - Error" not in result.stdout
    assert "failures 1: skipped - cannot import 'vanished_module'" in result.stdout
    assert "0 still failing, 0 fixed, 1 skipped" in result.stdout


def test_replay_fail_on_new_ignores_known_failures_and_catches_a_fixed_one_failing_again(tmp_path):
    db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    args = ("--model", "tests.broken_models:off_by_one_positions", "--oracle", "decode", "--max-examples", "30",
            "--scale", "tiny", "--db", db)
    assert fuzzkv("run", *args, cwd=ROOT).returncode == 1
    known = fuzzkv("replay", "--db", db, "--fail-on", "new", cwd=ROOT)
    assert known.returncode == 0 and "STILL FAILS" in known.stdout  # a known open bug does not block
    assert fuzzkv("replay", "--db", db, cwd=ROOT).returncode == 1  # the default gate still does
    import sqlite3

    with sqlite3.connect(tmp_path / "fuzz.db") as conn:
        conn.execute("UPDATE failures SET status = 'fixed'")
    regressed = fuzzkv("replay", "--db", db, "--fail-on", "new", cwd=ROOT)
    assert regressed.returncode == 1 and "REOPENED (was fixed)" in regressed.stdout and "1 re-opened" in regressed.stdout
    listed = json.loads(fuzzkv("failures", "--db", db, "--json", cwd=ROOT).stdout)
    assert [f["status"] for f in listed] == ["open"]


def test_replay_of_a_stored_hang_ends_within_the_deadline_and_passes_once_fixed(tmp_path, fault):
    fault("fault", "replay of a stored hang (per-example deadline)")
    (tmp_path / "mymodel.py").write_text("from tests.broken_models import hangs_when_cached as make\n")
    db = f"sqlite:///{tmp_path / 'fuzz.db'}"
    found = fuzzkv("run", "--model", "mymodel:make", "--scale", "tiny", "--oracle", "decode", "--max-examples", "15",
                   "--deadline", "2", "--db", db, "--json", cwd=tmp_path)
    assert found.returncode == 1, found.stderr
    [failure] = json.loads(found.stdout)["failures"]
    assert failure["kind"] == "error" and "deadline of 2 s" in failure["error"]
    # Replay runs each case under the deadline of the run that stored it: it ends (the subprocess
    # timeout would fail the test otherwise) and the hang still fails.
    replayed = subprocess.run([sys.executable, "-m", "fuzzkv", "replay", "--db", db], capture_output=True, text=True,
                              cwd=tmp_path, env=env(), timeout=240)
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "STILL FAILS" in replayed.stdout and "deadline of 2 s" in replayed.stdout
    (tmp_path / "mymodel.py").write_text(FIXED)
    fixed = fuzzkv("replay", "--db", db, "--deadline", "60", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "0 still failing, 1 fixed" in fixed.stdout
