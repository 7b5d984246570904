"""The Ray executor: each task of a sweep or campaign is a Ray task, scheduled across a Ray cluster
(``fuzzkv sweep --executor ray [--address ADDR]``; the optional extra ``fuzzkv[ray]``).

A task declares what it needs: one CPU, a GPU for a ``cuda`` device, and memory from the model's size (a
registry model's parameter count x its dtype's bytes x 3: weights, the precise twin's layer and activations).
It runs :func:`fuzzkv.executors.worker.fuzz_one` in the Ray worker process, writing the shared database itself
(PostgreSQL across machines; SQLite only on one node). A task whose worker dies (killed, out of memory, its
node lost) is retried by Ray up to ``retries`` times: a retry stores nothing twice, since a failure is upserted
by its fingerprint and the dead attempt's run row never finishes (resuming counts finished runs only). A task
past the sweep's hang limit is cancelled and shown as ``hang``; one whose retries ran out, as ``crashed``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from typing import Any

from fuzzkv import registry
from fuzzkv.errors import UsageError
from fuzzkv.executors import Executor
from fuzzkv.sweep import Collect, SweepConfig, Task

BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}
WORKING_COPIES = 3  # the weights, one layer's precise twin and the activations, within a margin


def fuzz_task(model: str, settings: str, threads: int) -> dict[str, Any]:
    """The body of one Ray task (runs in a Ray worker process)."""
    import torch

    from fuzzkv.executors.worker import fuzz_one

    torch.set_num_threads(threads)
    data = json.loads(settings)
    data.update(models=tuple(data["models"]), oracles=tuple(data["oracles"]),
                shard=tuple(int(x) for x in data["shard"].split("/")))
    return fuzz_one(model, SweepConfig(**data))


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, address: str | None = None, retries: int = 2, cpus_per_task: int = 1):
        self.address = address
        self.retries = retries
        self.cpus_per_task = cpus_per_task

    def __call__(self, tasks: list[Task], collect: Collect) -> None:
        # Ray prints its own notices (a worker died, a retry) on stdout: keep them beside the progress, on
        # stderr, so that ``--json`` output stays one JSON object.
        with contextlib.redirect_stdout(sys.stderr):
            self._schedule(tasks, collect)

    def _schedule(self, tasks: list[Task], collect: Collect) -> None:
        ray = _ray()
        _connect(ray, self.address)
        remote = ray.remote(fuzz_task)
        running: dict[Any, tuple[Task, float]] = {}
        for task in tasks:
            ref = remote.options(max_retries=self.retries, retry_exceptions=False,
                                 **resources(task, self.cpus_per_task)).remote(task.model, task.settings(),
                                                                               self.cpus_per_task)
            running[ref] = (task, time.monotonic())
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            for ref in done:
                task, started = running.pop(ref)
                collect(task, _outcome(ray, ref, task, started))
            for ref, (task, started) in list(running.items()):
                if time.monotonic() - started > task.config.hang_after:
                    ray.cancel(ref, force=True)
                    running.pop(ref)
                    collect(task, {"model": task.model, "status": "hang",
                                   "seconds": round(time.monotonic() - started, 1),
                                   "reason": f"no result within {task.config.hang_after:g} s: the Ray task was "
                                             "cancelled"})


def resources(task: Task, cpus: int) -> dict[str, Any]:
    """What one task asks the Ray scheduler for."""
    asked: dict[str, Any] = {"num_cpus": cpus, "num_gpus": 1 if task.config.device.startswith("cuda") else 0}
    memory = memory_for(task.config, task.model)
    if memory:
        asked["memory"] = memory
    return asked


def memory_for(config: SweepConfig, model: str) -> int | None:
    """Bytes a full-size registry model needs (None: a tiny or unknown model, small enough not to ask)."""
    spec = registry.get(model)
    if spec is None or config.scale != "full":
        return None
    count = parse_params(spec.params)
    return None if count is None else count * BYTES.get(config.dtype, 4) * WORKING_COPIES


def parse_params(text: str) -> int | None:
    """``"560M"`` -> 560_000_000; None when the registry gives no count."""
    match = re.fullmatch(r"([\d.]+)\s*([KMB])", text.strip(), re.I)
    if not match:
        return None
    return int(float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}[match.group(2).upper()])


def _outcome(ray: Any, ref: Any, task: Task, started: float) -> dict[str, Any]:
    try:
        result: dict[str, Any] = ray.get(ref)
        return result
    except ray.exceptions.RayError as exc:
        # Retries ran out (the worker kept dying), or the task raised: shown as this task's crash.
        last = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        return {"model": task.model, "status": "crashed", "seconds": round(time.monotonic() - started, 1),
                "reason": f"the Ray task failed ({type(exc).__name__}): {last}"}


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray, which is not installed.",
                         tip="pip install 'fuzzkv[ray]'") from None
    return ray


def _connect(ray: Any, address: str | None) -> None:
    if ray.is_initialized():
        return
    # Factories (module:function) import from the directory the sweep started in, as with the local executor.
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    local = {} if address else {"include_dashboard": False}  # a started cluster keeps its own dashboard setting
    try:
        ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path}}, **local)
    except ConnectionError as exc:
        raise UsageError(f"cannot reach the Ray cluster at {address}: {exc}",
                         tip="start it with 'ray start --head', or leave out --address for a local one") from None
