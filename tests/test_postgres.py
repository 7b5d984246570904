"""fuzzkv against a real PostgreSQL server (Debian's ``postgresql``, started on loopback by
tests/pg_server.py; never a mock): every command, several runs into one database at once, and
a password that never shows in output, stored rows or reports.

Skipped when PostgreSQL or psycopg is not installed, unless $FUZZKV_CI is set (CI must run it).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from fuzzkv.case import Case
from fuzzkv.db import FailureRecord, open_store
from fuzzkv.errors import StoreError
from tests import pg_server
from tests import test_store as store_contract

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "tests.broken_models:off_by_one_positions"
IN_CI = bool(os.environ.get("FUZZKV_CI"))


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason}; CI ($FUZZKV_CI) must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg (PostgreSQL driver) is not installed")
    try:
        server = pg_server.start_server()
    except LookupError as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


def _name(request) -> str:
    return re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)


@pytest.fixture(scope="session")
def shared_db(pg):
    """One database for the tests that need no database of their own."""
    pg.create_database("fuzzkv_shared")
    return "fuzzkv_shared"


@pytest.fixture
def db(pg, request):
    """A new empty database of the test's own; its URL (with the password), in the plain form users write."""
    return pg.create_database(_name(request))


@pytest.fixture
def schema_db(pg, shared_db, request):
    """A new empty schema of the test's own in the shared database; a URL that uses it (with the password)."""
    return pg.create_schema(shared_db, _name(request))


@pytest.fixture
def store(schema_db):
    s = open_store(schema_db)
    yield s
    s.close()


def rows_of_every_table(url: str) -> dict[str, list[tuple]]:
    import psycopg

    with psycopg.connect(url) as connection:
        tables = [t for (t,) in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
        return {t: connection.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables}


def text_of(rows: dict[str, list[tuple]]) -> str:
    return "\n".join(v.decode("latin-1") if isinstance(v, bytes) else str(v)
                     for table in rows.values() for row in table for v in row)


def fuzzkv(pg, *args, check_password=True):
    """Run the CLI in a subprocess; the password must show in neither stdout nor stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=600, check=False)
    if check_password:
        assert pg.password not in result.stdout, f"password printed on stdout by fuzzkv {args[0]}"
        assert pg.password not in result.stderr, f"password printed on stderr by fuzzkv {args[0]}"
    return result


def record(fingerprint="abc", **overrides):
    fields = dict(fingerprint=fingerprint, model="llama", backend="hf", oracle="decode", kind="mismatch",
                  case=Case(prompts=((1, 2),)), max_abs_diff=0.5, tolerance=1e-4, metrics={"max_abs_diff": 0.5},
                  error=None, reproduction="print('repro')", versions={"torch": "2.13.0"})
    fields.update(overrides)
    return FailureRecord(**fields)


# -- the store itself -----------------------------------------------------------------------

CONTRACT = sorted(name for name, f in vars(store_contract).items()
                  if name.startswith("test_") and list(inspect.signature(f).parameters) == ["store"])


@pytest.mark.parametrize("name", CONTRACT)
def test_the_store_contract_holds_on_postgres(name, store):
    # tests/test_store.py's tests of the store interface, as SQLite and the in-memory store pass them.
    getattr(store_contract, name)(store)


def test_non_finite_metrics_large_example_values_and_a_big_seed_round_trip(store):
    # PostgreSQL's json refuses NaN/Infinity and its btree refuses index rows over ~2.7 kB.
    diagnosis = {"per_position": [0.0, math.inf, None], "first": {"layer": 0, "part": "attention"}}
    store.save_failure(record(max_abs_diff=math.inf, metrics={"max_abs_diff": math.inf, "margin": math.nan},
                              diagnosis=diagnosis))
    [got] = store.failures()
    assert got.max_abs_diff == math.inf and got.metrics["max_abs_diff"] == math.inf
    assert math.isnan(got.metrics["margin"]) and got.diagnosis == diagnosis
    big = bytes(range(256)) * 40
    store.example_save(b"key", big)
    store.example_save(b"key", big)
    assert store.example_fetch(b"key") == [big]
    store.example_delete(b"key", big)
    assert store.example_fetch(b"key") == []
    run_id = store.start_run({"model": "m", "seed": 2**40}, {})
    assert store.runs()[0]["settings"]["seed"] == 2**40 and run_id == 1


def test_times_come_back_in_utc_whatever_the_server_zone(pg, db):
    pg.psql(f"ALTER DATABASE \"{db.rsplit('/', 1)[1]}\" SET timezone = 'Asia/Kolkata'")
    store = open_store(db)
    try:
        store.save_failure(record())
        [got] = store.failures()
        assert got.first_seen.utcoffset().total_seconds() == 0
        assert got.first_seen.isoformat().endswith("+00:00")
    finally:
        store.close()


def test_read_only_commands_never_create_tables(schema_db):
    with pytest.raises(StoreError, match="holds no fuzzkv data yet"):
        open_store(schema_db, create=False)
    assert rows_of_every_table(schema_db) == {}


def test_another_applications_database_is_refused_and_untouched(schema_db):
    import psycopg

    with psycopg.connect(schema_db) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER)")
    with pytest.raises(StoreError, match="not a fuzzkv database"):
        open_store(schema_db)
    assert rows_of_every_table(schema_db) == {"customers": []}


def test_a_newer_schema_version_is_refused(schema_db):
    import psycopg

    open_store(schema_db).close()
    with psycopg.connect(schema_db) as connection:
        connection.execute("UPDATE fuzzkv_schema SET version = 99")
    with pytest.raises(StoreError, match="a newer fuzzkv .schema version 99"):
        open_store(schema_db)


def test_a_version_1_database_is_upgraded_in_place(schema_db):
    import psycopg

    store = open_store(schema_db)
    store.finish_run(store.start_run({"model": "m"}, {}), 3, "failures")
    store.save_failure(record("old"))
    store.close()
    with psycopg.connect(schema_db) as connection:  # the version-1 schema: without the columns added since
        connection.execute("ALTER TABLE failures DROP COLUMN diagnosis")
        connection.execute("ALTER TABLE runs DROP COLUMN failures")
        connection.execute("ALTER TABLE baselines DROP COLUMN rms_value")
        connection.execute("ALTER TABLE baselines DROP COLUMN rms_noise")
        connection.execute("ALTER TABLE baselines DROP COLUMN oracles")
        connection.execute("UPDATE fuzzkv_schema SET version = 1")
    store = open_store(schema_db, create=False)
    try:
        [old] = store.failures()
        assert old.fingerprint == "old" and old.diagnosis == {} and store.runs()[0]["failures"] == 0
        store.save_failure(record("new", diagnosis={"worst": math.inf}))
        assert store.failures()[-1].diagnosis == {"worst": math.inf}
    finally:
        store.close()
    with psycopg.connect(schema_db) as connection:
        assert connection.execute("SELECT version FROM fuzzkv_schema").fetchall() == [(5,)]  # upgraded 1 -> 2 -> 3 -> 4 -> 5
        # the added column holds JSON as text, like the tables created new (json would refuse NaN)
        assert connection.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = "
                                  "current_schema() AND table_name = 'failures' AND column_name = 'diagnosis'"
                                  ).fetchall() == [("text",)]


def _at_once(count, work):
    """Run ``work(i)`` in ``count`` threads released together; returns the exceptions raised."""
    barrier, errors = threading.Barrier(count), []

    def run(i):
        barrier.wait()
        try:
            work(i)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_processes_opening_a_new_database_at_once_create_the_schema_once(schema_db):
    assert _at_once(4, lambda _: open_store(schema_db).close()) == []
    assert rows_of_every_table(schema_db)["fuzzkv_schema"] == [(5,)]


def _save_at_once(db, writers=4, rounds=5):
    """Several stores save the same new failure at once, ``rounds`` times; returns (errors, failures)."""
    stores = [open_store(db) for _ in range(writers)]
    try:
        errors = []
        for n in range(rounds):
            errors += _at_once(writers, lambda i, n=n: stores[i].save_failure(record(f"same-{n}")))
        return errors, stores[0].failures()
    finally:
        for s in stores:
            s.close()


def test_one_failure_saved_by_several_writers_at_once_is_one_row_counting_each(schema_db):
    errors, failures = _save_at_once(schema_db)
    assert errors == [], f"concurrent save_failure raised: {errors[0]!r}"
    assert sorted(f.fingerprint for f in failures) == [f"same-{n}" for n in range(5)]
    assert [f.times_seen for f in failures] == [4] * 5  # no lost update of the count


# -- the command line -------------------------------------------------------------------------

@pytest.mark.slow
def test_every_command_works_against_postgres_and_never_reveals_the_password(pg, db, tmp_path):
    run = ("run", "--model", BROKEN, "--scale", "tiny", "--oracle", "decode", "--max-examples", "30", "--db", db)
    first = fuzzkv(pg, *run, "--json")
    assert first.returncode == 1, first.stderr
    [found] = json.loads(first.stdout)["failures"]
    assert found["novelty"] == "new"

    table = fuzzkv(pg, "failures", "--db", db)
    assert table.returncode == 0 and BROKEN in table.stdout, table.stderr
    listed = fuzzkv(pg, "failures", "--db", db, "--json")
    [stored] = json.loads(listed.stdout)
    assert (stored["fingerprint"], stored["oracle"], stored["status"]) == (found["fingerprint"], "decode", "open")

    shown = fuzzkv(pg, "show", str(stored["id"]), "--db", db)
    assert shown.returncode == 0 and "# fuzzkv reproduction" in shown.stdout, shown.stderr
    assert json.loads(fuzzkv(pg, "show", str(stored["id"]), "--db", db, "--json").stdout)["id"] == stored["id"]

    replayed = fuzzkv(pg, "replay", "--db", db)
    assert replayed.returncode == 1 and "STILL FAILS" in replayed.stdout, replayed.stderr

    out = tmp_path / "x.html"
    reported = fuzzkv(pg, "report", "--db", db, "--out", str(out))
    assert reported.returncode == 0, reported.stderr
    html = out.read_text()
    assert BROKEN in html and pg.password not in html

    calibrated = fuzzkv(pg, "calibrate", "--model", "llama", "--scale", "tiny", "--db", db)
    assert calibrated.returncode == 0 and "tolerance" in calibrated.stdout, calibrated.stderr

    again = fuzzkv(pg, *run, "--fail-on", "new", "--json")
    assert again.returncode == 0, again.stderr
    assert [f["novelty"] for f in json.loads(again.stdout)["failures"]] == ["known"]
    [after] = json.loads(fuzzkv(pg, "failures", "--db", db, "--json").stdout)
    assert after["id"] == stored["id"] and after["times_seen"] >= 3  # first run, replay, second run

    rows = rows_of_every_table(db)
    assert {"runs", "failures", "baselines", "hypothesis_examples", "fuzzkv_schema"} <= set(rows)
    assert len(rows["runs"]) == 2 and len(rows["baselines"]) >= 1 and rows["hypothesis_examples"]
    leaked = [table for table, table_rows in rows.items() if pg.password in text_of({table: table_rows})]
    assert leaked == [], f"the password is stored in table(s) {leaked}"


@pytest.mark.slow
def test_two_runs_at_once_store_each_failure_once(pg, db):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "fuzzkv", "run", "--model", BROKEN, "--scale", "tiny", "--oracle", "decode",
               "--max-examples", "30", "--db", db]
    processes = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 1, stderr[-3000:]
        assert "Traceback" not in stderr and "Internal error" not in stderr, stderr[-3000:]
        assert pg.password not in stdout + stderr
    rows = rows_of_every_table(db)
    fingerprints = [row[1] for row in rows["failures"]]
    assert fingerprints and len(fingerprints) == len(set(fingerprints)), fingerprints
    import psycopg

    with psycopg.connect(db) as connection:
        assert connection.execute("SELECT outcome, failures FROM runs").fetchall() == [("failures", 1)] * 2


def _wrong_password(pg, name):
    return pg.url(name, password="wrong-" + pg.password)


def _closed_port(pg, name):
    return pg.url(name, port=pg_server.free_port())


def _unknown_database(pg, name):
    return pg.url("no_such_database_" + secrets.token_hex(3))


@pytest.mark.parametrize("bad_url, message", [
    (_wrong_password, "password authentication failed"),
    (_closed_port, "Connection refused"),
    (_unknown_database, "does not exist"),
])
@pytest.mark.parametrize("command", [
    ["failures"], ["replay"], ["report", "--out", "unused.html"],
    pytest.param(["run", "--model", "llama", "--scale", "tiny", "--max-examples", "2"], marks=pytest.mark.slow),
])
def test_connection_errors_are_one_line_exit_2_without_the_password(pg, shared_db, bad_url, message, command):
    url = bad_url(pg, shared_db)
    result = fuzzkv(pg, *command, "--db", url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot connect to database postgresql://fuzzkv:***@")
    assert message in lines[0] and "Tip: " in lines[0]
    assert "wrong-" not in lines[0] and not (ROOT / "unused.html").exists()
