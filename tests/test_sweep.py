"""``fuzzkv sweep``: sharding, the matrix and its root causes, the expected table, the stored sweep, and
workers that crash or hang without stopping the sweep (real subprocesses, real models)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fuzzkv import expected
from fuzzkv.db import MemoryStore, open_store
from fuzzkv.errors import UsageError
from fuzzkv.executors.local import LocalExecutor
from fuzzkv.sweep import (
    SweepConfig,
    is_untested,
    matrix,
    parse_shard,
    root_causes,
    row_from_result,
    run_sweep,
    shard,
)

ORACLES = ("decode", "batch", "chunked")


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_cover_every_architecture_exactly_once(count):
    names = [f"model-{i}" for i in range(23)]
    parts = [shard(reversed(names), index, count) for index in range(1, count + 1)]
    assert sorted(name for part in parts for name in part) == sorted(names)
    assert all(len(part) in (23 // count, 23 // count + 1) for part in parts)
    assert parts == [shard(names, index, count) for index in range(1, count + 1)]  # same on every machine


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3"])
def test_a_bad_shard_is_one_usage_error(text):
    with pytest.raises(UsageError):
        SweepConfig(models=("gpt2",), shard=parse_shard(text))


def _failure(oracle, *, diff=0.5, kind="mismatch", status="open", prompts=((1, 2), (3,)), where=None, stored_id=1):
    case = {"prompts": [list(p) for p in prompts], "padding_side": "left", "max_new_tokens": 2,
            "prefill_chunks": [2], "cache": "dynamic", "dtype": "float32", "reuse_batch": 0}
    return {"oracle": oracle, "kind": kind, "max_abs_diff": diff, "case": case, "status": status,
            "stored_id": stored_id, "summary": f"{oracle} {kind}", "where": where}


def _result(failures, **extra):
    return {"model": "m", "model_type": "llama", "status": "ran", "seconds": 1.0, "run_id": 1,
            "oracles": {o: {"examples": 25} for o in ORACLES}, "not_applicable": {}, "blind": {},
            "failures": failures, **extra}


def test_one_bug_tripping_several_oracles_is_one_root_cause():
    where = {"layer": 0, "part": "attention"}
    row = row_from_result(_result([_failure("decode", where=where, stored_id=1),
                                   _failure("batch", diff=0.7, where=where, stored_id=2),
                                   _failure("chunked", prompts=((5,),), where={"layer": 1, "part": "mlp"}, stored_id=3)]),
                          ORACLES)
    assert [c.state for c in row.cells.values()] == ["finding"] * 3
    assert len(row.root_causes) == 2
    first = row.root_causes[0]
    assert first["oracles"] == ["decode", "batch"] and first["failures"] == [1, 2] and first["max_abs_diff"] == 0.7
    assert first["shape"] == "batch 2, prompt 2, left-padded, 2 new token(s)"


def test_cells_say_clean_flaky_blind_and_not_applicable():
    row = row_from_result(_result([_failure("decode", status="flaky")], not_applicable={"chunked": "no chunks"}),
                          ORACLES)
    assert {o: c.state for o, c in row.cells.items()} == {"decode": "flaky", "batch": "clean",
                                                          "chunked": "not applicable"}
    assert row.root_causes == []  # a flaky failure is not a root cause
    blind = row_from_result(_result([], blind={"hf": "canaries missed"}), ORACLES)
    assert {c.state for c in blind.cells.values()} == {"blind"}


def test_an_oracle_that_ran_no_example_is_untested_never_clean():
    oracles = {"decode": {"examples": 25}, "batch": {"examples": 0}, "chunked": {"examples": 25}}
    row = row_from_result(_result([], oracles=oracles), ORACLES)
    assert {o: c.state for o, c in row.cells.items()} == {"decode": "clean", "batch": "untested", "chunked": "clean"}
    assert is_untested([row]) and not is_untested([row_from_result(_result([]), ORACLES)])


def test_a_documented_divergence_is_shown_as_expected_and_only_under_its_condition(monkeypatch):
    entry = expected.Expected("llama", "batch", "padding is documented as unsupported", "docs/x.md:1",
                              when={"padded": True})
    monkeypatch.setattr(expected, "EXPECTED", (entry,))
    row = row_from_result(_result([_failure("batch"), _failure("decode", prompts=((1, 2), (3,)))]), ORACLES)
    assert row.cells["batch"].state == "expected" and "docs/x.md:1" in row.cells["batch"].detail
    assert row.cells["decode"].state == "finding"  # another oracle: still a finding
    unpadded = row_from_result(_result([_failure("batch", prompts=((1,), (2,)))]), ORACLES)
    assert unpadded.cells["batch"].state == "finding"  # outside the documented condition
    assert [c["oracles"] for c in root_causes("llama", [_failure("batch"), _failure("decode")])] == [["decode"]]


@pytest.mark.parametrize("url", ["memory:", "sqlite"])
def test_a_sweep_is_stored_with_its_matrix(tmp_path, url):
    store = MemoryStore() if url == "memory:" else open_store(f"sqlite:///{tmp_path / 's.db'}")
    config = SweepConfig(models=("m",), oracles=ORACLES)
    result = matrix(config, [row_from_result(_result([_failure("decode")]), ORACLES)], 0.0)
    try:
        sweep_id = store.save_sweep(config.to_dict(), {"transformers": "x"}, result)
        [stored] = store.sweeps()
    finally:
        store.close()
    assert stored["id"] == sweep_id and stored["matrix"]["counts"]["finding"] == 1
    assert stored["matrix"]["rows"][0]["cells"]["decode"]["state"] == "finding"


@pytest.mark.slow
def test_a_crash_and_a_hang_do_not_stop_the_sweep(tmp_path):
    config = SweepConfig(models=("tests.sweep_models:crashes_the_interpreter", "tests.sweep_models:hangs_while_loading",
                                 "tests.broken_models:off_by_one_positions"),
                         oracles=("decode",), max_examples=5, max_time_per_model=5, workers=2, grace=20,
                         db_url=f"sqlite:///{tmp_path / 'sweep.db'}")
    rows = {row.model: row for row in run_sweep(config, LocalExecutor(config.workers), lambda *_: None)}
    crashed, hung, found = (rows[m] for m in config.models)
    assert crashed.status == "crashed" and "-11" in crashed.reason
    assert hung.status == "hang" and "killed" in hung.reason
    assert found.status == "ran" and found.cells["decode"].state == "finding" and found.root_causes


@pytest.mark.slow
def test_the_sweep_command_prints_the_matrix_and_stores_it(tmp_path):
    db = f"sqlite:///{tmp_path / 'sweep.db'}"
    command = [sys.executable, "-m", "fuzzkv", "sweep", "--models", "tests.broken_models:off_by_one_positions,qwen3",
               "--oracle", "decode", "--max-examples", "5", "--db", db, "--json", "--report", str(tmp_path / "r.html")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1, done.stderr  # the planted bug is a finding
    result = json.loads(done.stdout)
    states = {row["model"]: row["cells"]["decode"]["state"] for row in result["rows"]}
    assert states == {"tests.broken_models:off_by_one_positions": "finding", "qwen3": "clean"}
    assert "[2/2]" in done.stderr
    html = (tmp_path / "r.html").read_text()
    assert 'id="sweep-table"' in html and "qwen3" in html
