"""The watch command's logic (.ci/watch.py) on two fake releases of a fake library.

Each release is a folder holding a ``fakelib`` package; the finding scripts import it and exit as real finding
scripts do (1 reproduced, 0 absent, 2 cannot run). Observing the two releases for real (subprocesses, the way
the watch runs the real scripts) and comparing them must report exactly what moved, and nothing else. The tests of
the comparison alone are in the unit tier; the ones that start the scripts are not (the tier starts no process).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ci_watch", ROOT / ".ci" / "watch.py")
assert _spec is not None and _spec.loader is not None
watch = importlib.util.module_from_spec(_spec)
sys.modules["ci_watch"] = watch  # dataclasses look their module up by name
_spec.loader.exec_module(watch)

# A finding script as the real ones are shaped: a guarded import (exit 2), then the check (exit 1 or 0).
SCRIPT = """
try:
    import fakelib
except ImportError:
    raise SystemExit(2)
present = {check}
print("REPRODUCED" if present else "not reproduced")
raise SystemExit(1 if present else 0)
"""
FINDINGS = {"fakelib-cache-off-by-one": "fakelib.OFF_BY_ONE",  # fixed by release 2
            "fakelib-mask-dropped": "fakelib.MASK_DROPPED",  # present in both
            "fakelib-new-api": "fakelib.new_api()"}  # release 1 lacks the API: the script cannot run there
RELEASES = {"1.0": "OFF_BY_ONE = True\nMASK_DROPPED = True\n",
            "2.0": "OFF_BY_ONE = False\nMASK_DROPPED = True\ndef new_api():\n    return False\n"}


@pytest.fixture
def fake_releases(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    findings = tmp_path / "findings"
    findings.mkdir()
    for name, check in FINDINGS.items():
        guarded = SCRIPT.format(check=check)
        if "new_api" in check:  # a release without the API the script drives: it cannot run (exit 2)
            guarded = guarded.replace("present =", "if not hasattr(fakelib, 'new_api'):\n    raise SystemExit(2)\n"
                                      "present =")
        (findings / f"{name}.py").write_text(guarded, encoding="utf-8")
    releases = {}
    for version, body in RELEASES.items():
        package = tmp_path / f"release-{version}" / "fakelib"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(f"__version__ = {version!r}\n{body}", encoding="utf-8")
        releases[version] = package.parent
    return findings, releases


def observed(findings: Path, release: Path, **rest: object) -> object:
    env = {**os.environ, "PYTHONPATH": str(release)}
    return watch.Observation(scripts=watch.scripts(sys.executable, findings, env), **rest)


def test_a_bug_fixed_by_the_new_release_and_an_api_it_added_are_reported(fake_releases):
    findings, releases = fake_releases
    old = observed(findings, releases["1.0"], versions={"transformers": "1.0"})
    new = observed(findings, releases["2.0"], versions={"transformers": "2.0"})
    assert old.scripts == {"fakelib-cache-off-by-one": 1, "fakelib-mask-dropped": 1, "fakelib-new-api": 2}
    assert new.scripts == {"fakelib-cache-off-by-one": 0, "fakelib-mask-dropped": 1, "fakelib-new-api": 0}
    moved, changes = watch.diff(old, new)
    assert moved == ["transformers 1.0 -> 2.0"]
    assert [(c.what, c.meaning) for c in changes] == [
        ("findings/fakelib-cache-off-by-one.py exit 1 -> 0",
         "stopped reproducing: fixed upstream? (a GONE_BY entry in tests/known_bugs.py)"),
        ("findings/fakelib-new-api.py exit 2 -> 0", "runs now; bug absent")]


def test_the_same_release_twice_changes_nothing_and_exits_0(fake_releases, tmp_path, capsys):
    findings, releases = fake_releases
    for side in ("locked", "newest"):
        seen = observed(findings, releases["1.0"], versions={"transformers": "1.0"}, model_types=["llama"],
                        sweep={"gpt2 decode": "clean"}, tests={"t::a": "passed"})
        (tmp_path / f"{side}.json").write_text(json.dumps(asdict(seen)), encoding="utf-8")
    assert watch.main(["diff", str(tmp_path / "locked.json"), str(tmp_path / "newest.json")]) == 0
    assert "no behaviour changed" in capsys.readouterr().out


@pytest.mark.unit
def test_new_test_failures_sweep_cells_and_model_types_are_each_reported_and_exit_1(tmp_path, capsys):
    locked = watch.Observation(versions={"transformers": "5.24.0"}, tests={"t::a": "passed", "t::b": "failed"},
                               sweep={"gpt2 decode": "clean", "mpt generate": "failure", "llama batch": "clean"},
                               model_types=["gpt2", "old_model"])
    newest = watch.Observation(versions={"transformers": "5.25.0"},
                               tests={"t::a": "failed", "t::b": "failed", "t::c": "failed"},
                               sweep={"gpt2 decode": "failure", "mpt generate": "clean", "llama batch": "clean"},
                               model_types=["gpt2", "new_model"])
    for name, seen in (("locked", locked), ("newest", newest)):
        (tmp_path / f"{name}.json").write_text(json.dumps(asdict(seen)), encoding="utf-8")
    assert watch.main(["diff", str(tmp_path / "locked.json"), str(tmp_path / "newest.json")]) == 1
    report = capsys.readouterr().out.splitlines()
    assert report == [
        "watched releases: transformers 5.24.0 -> 5.25.0",
        "version-sensitive tests:",
        "  t::a: passed on the lock, failed on the newest releases: a new failure to triage",
        "  t::c: absent on the lock, failed on the newest releases: a new failure to triage",
        "sweep:",
        "  gpt2 decode: clean -> failure: a new failure: triage it (findings/ or the expected table)",
        "  mpt generate: failure -> clean: no longer fails: fixed upstream?",
        "model types:",
        "  new_model: new in the newest transformers: fuzz it (fuzzkv models --all)",
        "  old_model: dropped by the newest transformers"]


@pytest.mark.unit
def test_junit_outcomes_count_an_error_as_a_failure():
    junit = """<testsuites><testsuite>
      <testcase classname="tests.test_x" name="test_ok"/>
      <testcase classname="tests.test_x" name="test_bad"><failure message="boom"/></testcase>
      <testcase classname="tests.test_x" name="test_err"><error message="setup"/></testcase>
      <testcase classname="tests.test_x" name="test_skip"><skipped message="no"/></testcase>
    </testsuite></testsuites>"""
    assert watch.outcomes(junit) == {"tests.test_x::test_ok": "passed", "tests.test_x::test_bad": "failed",
                                     "tests.test_x::test_err": "failed", "tests.test_x::test_skip": "skipped"}
