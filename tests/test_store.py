"""The store keeps shrunk failures; SQLite and the in-memory twin behave alike."""

import sqlite3

import pytest

from fuzzkv.case import Case
from fuzzkv.db import FailureRecord, MemoryStore, open_store
from fuzzkv.errors import StoreError


def record(fingerprint="abc", model="llama", **overrides):
    fields = dict(fingerprint=fingerprint, model=model, backend="hf", oracle="decode", kind="mismatch",
                  case=Case(prompts=((1, 2), (3,)), max_new_tokens=2), max_abs_diff=0.5, tolerance=1e-4,
                  metrics={"max_abs_diff": 0.5}, error=None, reproduction="print('repro')",
                  versions={"torch": "2.13.0"})
    fields.update(overrides)
    return FailureRecord(**fields)


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = MemoryStore() if request.param == "memory" else open_store(f"sqlite:///{tmp_path / 'f.db'}")
    yield s
    s.close()


def test_failures_round_trip(store):
    run_id = store.start_run({"model": "llama"}, {"torch": "2.13.0"})
    store.save_failure(record(run_id=run_id))
    [got] = store.failures()
    assert got.case == Case(prompts=((1, 2), (3,)), max_new_tokens=2)
    assert (got.oracle, got.kind, got.max_abs_diff, got.run_id, got.status) == ("decode", "mismatch", 0.5, run_id, "open")
    store.finish_run(run_id, 10, "failures")


def test_same_fingerprint_updates_instead_of_duplicating(store):
    first = store.save_failure(record())
    again = store.save_failure(record())
    assert first == again
    [got] = store.failures()
    assert got.times_seen == 2


def test_failures_filter_by_model(store):
    store.save_failure(record("a", model="llama"))
    store.save_failure(record("b", model="gpt2"))
    assert [r.model for r in store.failures(model="gpt2")] == ["gpt2"]


def test_sqlite_survives_reopening(tmp_path):
    url = f"sqlite:///{tmp_path / 'f.db'}"
    open_store(url).save_failure(record())
    assert len(open_store(url).failures()) == 1


def test_an_unreadable_case_row_is_a_miss_not_a_crash(tmp_path):
    path = tmp_path / "f.db"
    store = open_store(f"sqlite:///{path}")
    store.save_failure(record("good"))
    store.save_failure(record("bad"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE failures SET case_json = '{\"prompts\": []}' WHERE fingerprint = 'bad'")
    assert [r.fingerprint for r in open_store(f"sqlite:///{path}").failures()] == ["good"]


def test_a_file_that_is_not_a_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("my precious notes\n" * 100)
    with pytest.raises(StoreError, match="cannot be opened as a database"):
        open_store(f"sqlite:///{path}")
    assert path.read_text() == "my precious notes\n" * 100


def test_another_applications_database_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER)")
    before = path.read_bytes()
    with pytest.raises(StoreError, match="not a fuzzkv database"):
        open_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


def test_a_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "f.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE fuzzkv_schema SET version = 99")
    with pytest.raises(StoreError, match="a newer fuzzkv .schema version 99"):
        open_store(f"sqlite:///{path}")


@pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x/y", "sqlite:////nonexistent-dir-xyz/f.db"])
def test_bad_urls_are_store_errors(url):
    with pytest.raises(StoreError):
        open_store(url)


def test_replacing_with_a_smaller_case_keeps_one_row(store):
    first = store.save_failure(record("big", case=Case(prompts=((1, 2, 3),))))
    same = store.replace_failure(first, record("small", case=Case(prompts=((1,),))))
    assert same == first
    [got] = store.failures()
    assert got.fingerprint == "small" and got.case == Case(prompts=((1,),)) and got.times_seen == 1


def test_shrinking_onto_a_known_failure_merges_into_it(store):
    known = store.save_failure(record("minimal"))
    provisional = store.save_failure(record("big"))
    merged = store.replace_failure(provisional, record("minimal"))
    assert merged == known
    [got] = store.failures()
    assert got.fingerprint == "minimal" and got.times_seen == 2


def test_mark_sets_status_and_seen_bumps_history(store):
    failure_id = store.save_failure(record())
    store.mark(failure_id, "fixed")
    assert store.failure(failure_id).status == "fixed"
    assert store.failures(status="open") == []
    store.mark(failure_id, "open", seen=True)
    assert store.failure(failure_id).times_seen == 2
    assert store.failure(12345) is None


def test_baselines_newest_first_per_configuration(store):
    from fuzzkv.db import BaselineRecord

    def baseline(noise, model="llama"):
        return BaselineRecord(model, "tiny", "hf", "float32", "cpu", "eager", {"torch": "2.13.0"}, noise * 16, noise,
                              7.0, 16.0, 4)

    store.save_baseline(baseline(1e-6))
    store.save_baseline(baseline(2e-6))
    store.save_baseline(baseline(9e-6, model="gpt2"))
    found = store.baselines(("llama", "tiny", "hf", "float32", "cpu", "eager"))
    assert [b.noise for b in found] == [2e-6, 1e-6]
    assert store.baselines(("llama", "full", "hf", "float32", "cpu", "eager")) == []


def test_hypothesis_examples_are_kept_idempotently(store):
    store.example_save(b"k", b"v1")
    store.example_save(b"k", b"v1")
    store.example_save(b"k", b"v2")
    assert store.example_fetch(b"k") == [b"v1", b"v2"]
    store.example_delete(b"k", b"v1")
    store.example_delete(b"k", b"absent")
    assert store.example_fetch(b"k") == [b"v2"] and store.example_fetch(b"other") == []


def test_read_only_opening_never_creates_a_file(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{path}", create=False)
    assert not path.exists()


def test_a_version_1_file_is_upgraded_in_place_and_loses_nothing(tmp_path):
    # tests/data/store-v1.db was written by fuzzkv's schema-1 code (a run finding a planted bug).
    import shutil
    from pathlib import Path

    path = tmp_path / "v1.db"
    shutil.copy(Path(__file__).parent / "data" / "store-v1.db", path)
    store = open_store(f"sqlite:///{path}", create=False)
    try:
        [record] = store.failures()
        assert record.model == "tests.broken_models:off_by_one_positions" and record.diagnosis == {}
        assert record.case.prompts == ((0,),) and "import torch" in record.reproduction
        assert [run["failures"] for run in store.runs()] == [0]  # not counted before version 2
        [baseline] = store.baselines((record.model, "tiny", "hf", "float32", "cpu", "eager"))
        assert baseline.oracles is None  # stored before version 5 said which oracles: it measured every one
        store.finish_run(store.start_run({"model": "m"}, {}), 3, "failures", failures=1)
        assert store.runs()[-1]["failures"] == 1
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM fuzzkv_schema").fetchall() == [(5,)]  # upgraded 1 -> 2 -> 3 -> 4 -> 5


@pytest.mark.parametrize("url, shown", [
    ("postgresql://fuzz:s3cr@t@db.example:5432/kv", "postgresql://fuzz:***@db.example:5432/kv"),
    ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:***@h/db"),
    ("postgresql://h/db?sslmode=require&password=pw", "postgresql://h/db?sslmode=require&password=***"),
    ("sqlite:///fuzzkv.db", "sqlite:///fuzzkv.db"),
])
def test_passwords_are_redacted_from_urls_before_they_are_stored_or_shown(url, shown):
    from fuzzkv.config import RunConfig
    from fuzzkv.db import redact_url

    assert redact_url(url) == shown
    assert RunConfig(model="llama", db_url=url).to_dict()["db_url"] == shown


def _save_at_once(path, barrier, fingerprint):
    from fuzzkv.db import open_store

    store = open_store(f"sqlite:///{path}")
    barrier.wait()
    for _ in range(20):
        store.save_failure(record(fingerprint))
    store.close()


def test_processes_saving_the_same_failure_at_once_store_one_row(tmp_path):
    import multiprocessing

    path = tmp_path / "shared.db"
    open_store(f"sqlite:///{path}").close()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_save_at_once, args=(path, barrier, "same")) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    store = open_store(f"sqlite:///{path}")
    try:
        [record] = store.failures()
        assert record.times_seen == 80
    finally:
        store.close()
