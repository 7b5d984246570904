"""A third party adds an oracle and a backend without editing fuzzkv: `tests/data/toy_plugin` is such a package
(one module and its dist-info with entry points), put on the path of a `fuzzkv run`. Its oracle and backend come
from the registries alone: no file of fuzzkv's names them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzzkv.backends.drivers import Driver
from fuzzkv.oracles import Oracle
from fuzzkv.plugins import Registry

PLUGIN = Path(__file__).parent / "data" / "toy_plugin"
SOURCE = Path(__file__).parent.parent / "fuzzkv"


def run_with_plugin(tmp_path: Path, **env: str) -> tuple[int, dict]:
    command = [sys.executable, "-m", "fuzzkv", "run", "--model", "llama", "--scale", "tiny", "--backend", "hf,toy",
               "--oracle", "toy-decode", "--oracle", "cross", "--max-examples", "5", "--json",
               "--db", f"sqlite:///{tmp_path / 'fuzzkv.db'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(PLUGIN), **env})
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_no_file_of_fuzzkv_names_the_toy_plugin():
    names = ("toy_fuzzkv_plugin", "toy-decode", "ToyBackend", "cross-toy")
    named = [path for path in SOURCE.rglob("*.py") if any(name in path.read_text() for name in names)]
    assert named == []


def test_a_registered_oracle_and_backend_run_and_pass_on_a_clean_model(tmp_path):
    code, run = run_with_plugin(tmp_path)
    assert code == 0, run
    assert run["oracles"]["toy-decode@toy"]["examples"] >= 5  # the plugin's oracle on the plugin's lane
    assert run["oracles"]["cross@cross-toy"]["examples"] >= 5  # fuzzkv's cross oracle reaches the new backend
    assert run["failures"] == []


def test_a_registered_backend_with_a_cache_bug_is_caught_by_both_oracles(tmp_path):
    code, run = run_with_plugin(tmp_path, TOY_BUG="1")
    assert code == 1
    found = {(f["oracle"], f["backend"]) for f in run["failures"] if f["kind"] == "mismatch"}
    assert found == {("toy-decode", "toy"), ("cross", "cross-toy")}
    assert all(f["case"]["prompts"] == [[0]] for f in run["failures"])  # shrunk to one token
    assert all(abs(f["max_abs_diff"] - 0.5) < 1e-3 for f in run["failures"])  # the planted half logit


@pytest.mark.parametrize("registered, error", [
    ((lambda: (1,)), "is a int, not a Driver"),
])
def test_a_registration_that_is_not_the_registered_kind_is_an_error(registered, error):
    with pytest.raises(TypeError, match=error):
        list(Registry("fuzzkv.test", Driver, registered, lambda d: d.name))


def test_two_oracles_of_one_name_are_an_error():
    from fuzzkv.oracles.core import BATCH, DECODE

    twins = Registry("fuzzkv.test", Oracle, lambda: (DECODE, BATCH, DECODE), lambda oracle: oracle.name)
    with pytest.raises(ValueError, match="two fuzzkv.test registrations are named 'decode'"):
        len(twins)
