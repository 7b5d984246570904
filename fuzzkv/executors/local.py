"""The local executor: ``--workers`` processes on this machine, one model each at a time.

Each model runs in ``python -m fuzzkv.executors.worker``: a fresh interpreter, killed after the
sweep's hang limit. A process that dies without a result is "crashed" (with the last line it
printed); one killed at the limit is "hang".
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from fuzzkv.config import threads_per_worker
from fuzzkv.executors import Executor
from fuzzkv.sweep import Collect, Task


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int = 1):
        self.workers = workers

    def __call__(self, tasks: list[Task], collect: Collect) -> None:
        # Cores are shared out: two workers on two cores get one torch thread each.
        threads = threads_per_worker(self.workers)
        with tempfile.TemporaryDirectory(prefix="fuzzkv-sweep-") as scratch, \
                ThreadPoolExecutor(max_workers=self.workers) as pool:
            running = {pool.submit(run_worker, task.model, task.settings(), threads, task.config.hang_after,
                                   Path(scratch)): task for task in tasks}
            for done in as_completed(running):
                collect(running[done], done.result())


def run_worker(model: str, settings: str, threads: int, hang_after: float, scratch: Path) -> dict[str, Any]:
    """Fuzz ``model`` in a child interpreter; its result, or what became of it."""
    out = scratch / f"{abs(hash(model))}-{time.monotonic_ns()}.json"
    command = [sys.executable, "-m", "fuzzkv.executors.worker", model, settings, str(out), str(threads)]
    started = time.monotonic()
    try:
        process = subprocess.run(command, capture_output=True, text=True, timeout=hang_after)
    except subprocess.TimeoutExpired:
        return {"model": model, "status": "hang", "seconds": round(time.monotonic() - started, 1),
                "reason": f"no result within {hang_after:g} s: the worker was killed"}
    if out.exists():
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    last = (process.stderr.strip().splitlines() or ["(nothing printed)"])[-1][:300]
    return {"model": model, "status": "crashed", "seconds": round(time.monotonic() - started, 1),
            "reason": f"the worker exited with code {process.returncode} and no result: {last}"}
