"""Campaigns on Ray, for real: a local Ray cluster on loopback (a head and a second node, started with
``ray start``), a campaign file of 2 architectures x 2 dtypes into a real PostgreSQL started by the suite, one task's
worker process killed mid-task. Every task's result must be stored exactly once, and a second run of the same
campaign must skip every task.

One test, because ``ray stop`` ends every Ray process of the machine: two tests on two xdist workers would stop
each other's cluster. Skipped where Ray is not installed, unless $FUZZKV_CI is set (CI must run it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fuzzkv.db import open_store
from tests.pg_server import free_port
from tests.test_postgres import IN_CI, pg  # noqa: F401 - the session's PostgreSQL server fixture

ROOT = Path(__file__).resolve().parent.parent
DIES = "tests.sweep_models:dies_on_its_first_attempt"
BROKEN = "tests.broken_models:off_by_one_positions"


def ray_bin() -> str:
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        if IN_CI:
            pytest.fail("Ray is not installed; CI ($FUZZKV_CI) must run the Ray tests", pytrace=False)
        pytest.skip("Ray is not installed (pip install 'fuzzkv[ray]')")
    return str(ray)


def cluster_env(attempts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FUZZKV_", "RAY_"))}
    return {**env, "PYTHONPATH": str(ROOT), "FUZZKV_TEST_ATTEMPTS": str(attempts),
            "RAY_USAGE_STATS_ENABLED": "0"}


def campaign_file(path: Path, db_url: str) -> Path:
    path.write_text(f"""
[campaign]
models = ["{DIES}", "{BROKEN}"]
dtypes = ["float32", "bfloat16"]
backends = ["hf"]
scale = "tiny"
oracles = ["decode"]
max_examples = 8
max_time_per_model = 30
db = "{db_url}"
""")
    return path


def finished_runs(db_url: str) -> list[tuple[str, str]]:
    store = open_store(db_url, create=False)
    try:
        return sorted((r["settings"]["model"], r["settings"]["dtype"]) for r in store.runs() if r["outcome"])
    finally:
        store.close()


@pytest.mark.slow
def test_a_campaign_on_a_ray_cluster_survives_a_killed_worker_stores_once_and_resumes(tmp_path, pg):  # noqa: F811
    ray = ray_bin()
    db_url = pg.create_database("fuzzkv_ray_campaign")
    attempts = tmp_path / "attempts"
    env = cluster_env(attempts)
    port = free_port()
    # Ray's socket paths must stay short: its own temp directory, not pytest's deep tmp_path.
    ray_tmp = tempfile.mkdtemp(prefix="fkray-")
    head = [ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
            f"--temp-dir={ray_tmp}", "--disable-usage-stats", "--object-store-memory=100000000"]
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1",
                        "--object-store-memory=100000000"], env=env, check=True, capture_output=True, timeout=180)
        command = [sys.executable, "-m", "fuzzkv", "sweep", "--campaign", str(campaign_file(tmp_path / "c.toml", db_url)),
                   "--executor", "ray", "--address", f"127.0.0.1:{port}", "--json"]
        driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        killed = kill_the_first_attempt(attempts, driver)
        out, err = driver.communicate(timeout=900)
        assert driver.returncode == 1, err  # the planted bug is a finding; nothing crashed
        result = json.loads(out)
        rows = {row["model"]: row for row in result["rows"]}
        assert len(rows) == 4 and all(row["status"] == "ran" for row in rows.values()), rows
        for dtype in ("float32", "bfloat16"):
            assert rows[f"{DIES} [{dtype}, cpu, hf]"]["cells"]["decode"]["state"] == "clean"
            assert rows[f"{BROKEN} [{dtype}, cpu, hf]"]["cells"]["decode"]["state"] == "finding"
        assert killed and len(list(attempts.iterdir())) >= 2  # the killed attempt, then its retry (and the other dtype)
        # Exactly once: one finished run per task, one failure row per fingerprint, one per broken task.
        expected = sorted((model, dtype) for model in (DIES, BROKEN) for dtype in ("float32", "bfloat16"))
        assert finished_runs(db_url) == expected
        store = open_store(db_url, create=False)
        try:
            failures = store.failures(status=None)
        finally:
            store.close()
        assert len({f.fingerprint for f in failures}) == len(failures)
        assert sorted(f.settings["dtype"] for f in failures if f.model == BROKEN) == ["bfloat16", "float32"]

        # Resumed: every task's result is stored for these versions, so nothing runs again.
        again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert "4 already stored, skipped" in again.stderr, again.stderr
        assert finished_runs(db_url) == expected
        states = {row["model"]: row["cells"]["decode"]["state"] for row in json.loads(again.stdout)["rows"]}
        assert sorted(states.values()) == ["finding", "finding", "stored", "stored"]
        assert again.returncode == 1  # the stored findings still stand
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def kill_the_first_attempt(attempts: Path, driver: subprocess.Popen) -> int:
    """Wait until a task's worker process is building the model that waits to be killed, and SIGKILL it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and driver.poll() is None:
        pids = list(attempts.iterdir()) if attempts.exists() else []
        if pids:
            pid = int(pids[0].name)
            os.kill(pid, signal.SIGKILL)
            return pid
        time.sleep(0.2)
    raise AssertionError(f"no task reached the model build: {driver.communicate()[1][-2000:]}")
