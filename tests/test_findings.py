"""Real bugs fuzzkv found in released libraries: where the buggy combination is installed, fuzzkv
reports each as a finding (never a crash), and its reproduction script reproduces it (exit 1). Each has
its write-up in findings/ (the table is tests/known_bugs.py). The scripts' other outcomes on the installed
releases too: exit 0 where a release is checked free of the bug, exit 2 on a release a script does not
drive (the outcomes that need no particular release: tests/test_finding_scripts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.known_bugs import (
    BRIDGE,
    CLEAN_BEFORE,
    DRIVES,
    GONE_BY,
    SCRIPTED,
    _version,
    known_on_4,
    reset_keeps_keys_reason,
    script_exit,
    scripted_reason,
    tl_cache_bug_reason,
)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def failures_of_run(tmp_path: Path, *args: str) -> list[dict]:
    """``fuzzkv run ARGS --json`` in a subprocess on a fresh database, which must exit 1: its failures."""
    result = subprocess.run([sys.executable, "-m", "fuzzkv", "run", *args, "--db", f"sqlite:///{tmp_path / 'x.db'}",
                             "--json"], capture_output=True, text=True, cwd=tmp_path, env=ENV, timeout=600)
    assert result.returncode == 1, result.stderr[-3000:]
    failures: list[dict] = json.loads(result.stdout)["failures"]
    return failures


def run_script(tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    """A failure's reproduction script, saved and run as a user would."""
    script = tmp_path / "repro.py"
    script.write_text(text)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=ENV,
                          timeout=600)


def test_findings_are_written_up():
    for finding in sorted(p for p in (ROOT / "findings").glob("*.md") if p.name != "TRIAGE.md"):
        text = finding.read_text()
        for section in ("Versions", "Minimal case", "Reproduction", "uspected source", "Upstream"):
            assert section in text, f"{finding.name} lacks its {section} section"
        assert finding.with_suffix(".py").exists(), f"{finding.name} has no reproduction script beside it"


@pytest.mark.parametrize("finding", [row[0] for row in SCRIPTED])
def test_each_finding_script_reproduces_its_bug_on_the_affected_release(finding):
    """The standalone scripts in findings/ exit 1 while their bug is present (they are what a maintainer runs)."""
    reason = scripted_reason(finding)
    if reason:
        pytest.skip(reason)
    script = ROOT / "findings" / f"{finding}.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "REPRODUCED" in result.stdout, result.stdout + result.stderr[-2000:]


def run_finding(finding: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """findings/FINDING.py run as a maintainer would, in a directory of its own."""
    return subprocess.run([sys.executable, str(ROOT / "findings" / f"{finding}.py")], capture_output=True, text=True,
                          cwd=cwd, timeout=600, env={**os.environ, **env})


@pytest.mark.slow
@pytest.mark.parametrize("finding", sorted({*GONE_BY, *CLEAN_BEFORE, BRIDGE}))
def test_each_finding_script_exits_0_on_a_release_checked_free_of_its_bug(finding, tmp_path):
    """Where a bug is gone (or not yet there) the script runs to its end, says "not reproduced" and exits 0: a real
    release, never a patched one."""
    expected = script_exit(finding)
    if expected is None or expected[0] != 0:
        pytest.skip(expected[1] if expected else f"no release checked free of {finding} is installed")
    result = run_finding(finding, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "not reproduced" in result.stdout and "REPRODUCED" not in result.stdout, result.stdout


@pytest.mark.slow
def test_the_bridge_script_exits_1_where_transformers_renamed_the_cache_keyword(tmp_path):
    expected = script_exit(BRIDGE)
    if expected is None or expected[0] != 1:
        pytest.skip("the TransformerLens bridge's cache-keyword bug does not apply to the installed versions")
    result = run_finding(BRIDGE, tmp_path)
    assert result.returncode == 1 and "REPRODUCED" in result.stdout, result.stdout + result.stderr[-2000:]


def test_finding_scripts_exit_2_on_a_release_they_do_not_drive(tmp_path):
    """A script that drives an API of particular releases refuses the others in one line ("cannot run: ..."), exit 2:
    never 1 ("reproduced"), nor 0 for a case it could not run. They stop before their case, so one interpreter runs
    them all (tests/without_package.py, nothing made missing)."""
    refused = [finding for finding in sorted(DRIVES) if (script_exit(finding) or (None,))[0] == 2]
    if not refused:
        pytest.skip("every script that drives particular releases drives the installed ones")
    runs = [[str(ROOT / "findings" / f"{finding}.py"), None] for finding in refused]
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "without_package.py"), json.dumps(runs)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for finding, outcome in zip(refused, json.loads(result.stdout)):
        assert outcome["status"] == 2 and "REPRODUCED" not in outcome["stdout"], (finding, outcome)
        assert outcome["stderr"].splitlines()[-1].startswith("cannot run: "), (finding, outcome["stderr"][-2000:])


# transformers 5.24.0's entry for the sliding layers of "hybrid_sliding" models in masking_utils: the bug of
# findings/transformers-hybrid-sliding-static-generate-mask.md, the one line 5.25.0 changed for it.
MASKS_OF_5_24 = """import transformers.masking_utils as masks
masks.LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING["hybrid_sliding"]["sliding_attention"] = masks.create_causal_mask
"""


@pytest.mark.slow
def test_the_hybrid_sliding_script_reproduces_the_5_24_mask_entry_that_5_25_fixed(tmp_path):
    """No CI environment has 5.24 any more: the script exits 0 on 5.25 (above) and, given back 5.24's one entry, 1."""
    release = _version("transformers")
    if release is None or release[:2] < (5, 25):
        pytest.skip("transformers before 5.25 has the 5.24 entry itself")
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "sitecustomize.py").write_text(MASKS_OF_5_24)
    result = run_finding("transformers-hybrid-sliding-static-generate-mask", tmp_path, PYTHONPATH=str(stub))
    assert result.returncode == 1 and "REPRODUCED" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "raised RuntimeError" in result.stdout  # the static cache's mask as long as the cache, not the window


@pytest.mark.parametrize("model", ["llama", "gemma-2-2b"])
def test_transformerlens_bridge_ignoring_the_cache_keyword_is_reported_as_a_finding(model, tmp_path):
    pytest.importorskip("transformer_lens")
    if "bridge-ignores-cache-kwarg" not in (tl_cache_bug_reason() or ""):
        pytest.skip("the TransformerLens cache-keyword bug does not apply to the installed versions")
    [failure] = failures_of_run(tmp_path, "--model", model, "--backend", "tl", "--scale", "tiny", "--oracle",
                                "tl-decode", "--max-examples", "10")
    assert failure["kind"] == "error" and "cache did not grow from 0 to" in failure["error"]
    assert failure["case"]["prompts"] == [[0]]  # shrunk: the first cached call already shows it
    repro = run_script(tmp_path, failure["reproduction"])
    assert repro.returncode == 1 and "SilentlyUncached" in repro.stderr, repro.stdout + repro.stderr[-2000:]


def test_dynamic_cache_reset_keeping_its_keys_is_found_by_cache_reuse_and_shrunk(tmp_path):
    reason = reset_keeps_keys_reason()
    if reason is None:
        pytest.skip("DynamicCache.reset() empties the cache in the installed transformers")
    failures = failures_of_run(tmp_path, "--model", "llama", "--scale", "tiny", "--oracle", "cache-reuse",
                               "--max-examples", "30")
    assert failures and {failure["case"]["cache"] for failure in failures} == {"dynamic"}
    # Shrunk to one one-token prompt: a reset cache reused even for the same prompt keeps the old keys.
    mismatch = next(failure for failure in failures if failure["kind"] == "mismatch")
    assert mismatch["case"]["prompts"] == [[0]] and mismatch["case"]["max_new_tokens"] == 1
    repro = run_script(tmp_path, mismatch["reproduction"])
    assert repro.returncode == 1 and "FAILS" in repro.stdout, repro.stdout + repro.stderr[-2000:]


def test_a_static_cache_driven_directly_before_4_56_meets_the_release_s_static_cache_bug(tmp_path):
    """Before 4.56 fuzzkv allocates a StaticCache for the batch and passes cache positions itself: GPT-NeoX's static
    cache bug of 4.46 (found first through generate()) shows there too, shrunk, and its script reproduces it."""
    known = known_on_4("pythia-70m").get("cache-impl")
    if known is None:
        pytest.skip("no known static-cache bug of GPT-NeoX on the installed transformers")
    failures = failures_of_run(tmp_path, "--model", "pythia-70m", "--scale", "tiny", "--oracle", "cache-impl",
                               "--max-examples", "25")
    mismatch = next(failure for failure in failures if failure["kind"] == "mismatch")
    assert mismatch["case"]["prompts"] == [[0]] and mismatch["case"]["max_new_tokens"] == 2  # the finding's case
    assert mismatch["max_abs_diff"] > 1.0
    repro = run_script(tmp_path, mismatch["reproduction"])
    assert repro.returncode == 1 and "static vs dynamic" in repro.stdout, repro.stdout + repro.stderr[-2000:]
