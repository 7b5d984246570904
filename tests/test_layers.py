"""The layering of ARCHITECTURE.md, at run time: commands that only parse or list load no torch,
and fuzzkv's own calls raise no deprecation warning on the installed transformers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import sys, runpy
sys.argv = ["fuzzkv", *{args!r}]
try:
    runpy.run_module("fuzzkv", run_name="__main__")
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "transformer_lens", "sqlalchemy") if m in sys.modules)
print("LOADED=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["models"], ["replay", "--help"]])
def test_commands_that_only_parse_or_list_load_no_torch(args):
    result = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    loaded = [line for line in result.stderr.splitlines() if line.startswith("LOADED=")]
    assert loaded == ["LOADED="], result.stderr
    assert result.stdout.strip()


def test_a_whole_run_raises_no_deprecation_warning_from_fuzzkv_calls(tmp_path):
    # Every warning category that announces an API change is an error: a call fuzzkv makes with an
    # argument the installed transformers has renamed (e.g. past_key_values -> cache in 5.24) fails the run.
    from tests.known_bugs import reset_keeps_keys_reason

    # Where DynamicCache.reset() keeps its keys (4.56-4.57, a finding), cache-reuse fails: the other oracles run.
    oracles = ["--oracle", "decode", "--oracle", "batch", "--oracle", "chunked", "--oracle", "cache-impl",
               "--oracle", "generate"] if reset_keeps_keys_reason() else []
    result = subprocess.run(
        [sys.executable, "-W", "error::FutureWarning", "-W", "error::DeprecationWarning:transformers",
         "-m", "fuzzkv", "run", "--model", "llama", "--scale", "tiny", "--max-examples", "5", *oracles,
         "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FutureWarning" not in result.stderr and "deprecated" not in result.stderr.lower()
    data = json.loads(result.stdout)
    assert data["failures"] == [] and data["examples"] >= 5 * len(data["oracles"])
