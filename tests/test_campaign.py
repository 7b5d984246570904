"""Campaign files (``fuzzkv sweep --campaign FILE``): parsed with one clear error for bad input, expanded into
one task per architecture x dtype x device x backend, and resumed: a task a finished run stored for the same
settings and versions is skipped. Run with the local executor here; tests/test_ray.py runs one on Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzzkv import campaign
from fuzzkv.errors import UsageError
from fuzzkv.sweep import tasks_of

ROOT = Path(__file__).resolve().parent.parent
BROKEN = "tests.broken_models:off_by_one_positions"


def write(tmp_path: Path, body: str) -> str:
    path = tmp_path / "campaign.toml"
    path.write_text(body)
    return str(path)


def fuzzkv(*args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FUZZKV_")}, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=900)


def test_a_campaign_is_every_dtype_device_and_backend_of_every_model(tmp_path):
    planned = campaign.load(write(tmp_path, """
[campaign]
models = ["llama", "gpt2"]
dtypes = ["float32", "bfloat16"]
backends = ["hf", "hf,tl"]
oracles = ["decode"]
max_examples = 7
max_time_per_model = 60
db = "sqlite:///c.db"
"""))
    configs = planned.sweeps(lambda names: names.split(","))
    labels = [task.label for task in tasks_of(configs)]
    assert len(labels) == 8 and "gpt2 [bfloat16, cpu, hf,tl]" in labels
    assert {(c.max_examples, c.max_time_per_model, c.db_url, c.oracles) for c in configs} == {
        (7, 60, "sqlite:///c.db", ("decode",))}


@pytest.mark.parametrize("body, message", [
    ("[campaign]\nmodels = ['llama']\nbudget = 3\n", "unknown key 'budget'"),
    ("[campaign]\ndtypes = ['float32']\n", "names no models"),
    ("[campaign]\nmodels = ['llama']\nmax_examples = 'many'\n", "max_examples in the campaign file"),
    ("[sweep]\nmodels = ['llama']\n", "has no [campaign] table"),
    ("[campaign\n", "is not valid TOML"),
    ("[campaign]\nmodels = ['llama']\nbackends = ['vllm']\n", "unknown backend 'vllm'"),
])
def test_a_bad_campaign_file_is_one_usage_error(tmp_path, body, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[")):
        campaign.load(write(tmp_path, body))


def test_bad_campaign_input_exits_2_with_one_line(tmp_path):
    ran = fuzzkv("sweep", "--campaign", write(tmp_path, "[campaign]\nmodels = 3\n"))
    assert ran.returncode == 2 and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    ran = fuzzkv("sweep", "--models", "llama", "--address", "127.0.0.1:6379")
    assert ran.returncode == 2 and "--address needs --executor ray" in ran.stderr


@pytest.mark.slow
def test_a_campaign_runs_each_task_and_a_second_run_skips_what_is_stored(tmp_path):
    db = f"sqlite:///{tmp_path / 'campaign.db'}"
    path = write(tmp_path, f"""
[campaign]
models = ["{BROKEN}", "llama"]
dtypes = ["float32", "bfloat16"]
oracles = ["decode"]
max_examples = 6
max_time_per_model = 30
db = "{db}"
""")
    first = fuzzkv("sweep", "--campaign", path, "--json")
    assert first.returncode == 1, first.stderr  # the planted bug
    rows = {row["model"]: row["cells"]["decode"]["state"] for row in json.loads(first.stdout)["rows"]}
    assert rows == {f"{BROKEN} [float32, cpu, hf]": "finding", f"{BROKEN} [bfloat16, cpu, hf]": "finding",
                    "llama [float32, cpu, hf]": "clean", "llama [bfloat16, cpu, hf]": "clean"}
    second = fuzzkv("sweep", "--campaign", path, "--json")
    assert "4 already stored, skipped" in second.stderr and second.returncode == 1
    stored = {row["model"]: row["cells"]["decode"]["state"] for row in json.loads(second.stdout)["rows"]}
    assert stored == {**rows, "llama [float32, cpu, hf]": "stored", "llama [bfloat16, cpu, hf]": "stored"}
