"""``fuzzkv sweep``: fuzz many architectures, each in its own process, into one database.

The sweep builds a matrix architecture x oracle. Each cell is one of

- ``clean``: the oracle ran its examples and found nothing;
- ``finding``: a mismatch or error (its kind and largest difference), or ``expected`` where the
  package's ``expected`` table documents the divergence as intended, with the library's own evidence;
- ``flaky``: a failure that did not fail again when re-run;
- ``not applicable``: the oracle has no meaning for this model (e.g. a static cache for a recurrent state);
- ``blind``: the lane's canaries went unseen, so a pass there would prove nothing;
- ``untested``: the oracle applies, but no example ran (every case drawn was refused or skipped): never clean;
- ``could not build``: the architecture's tiny twin could not be made (with why): never a finding;
- ``crashed`` / ``hang``: the worker process died or ran past its time.

Findings that share a model, a minimal case shape and where it breaks are one root cause: a dropped
padding mask trips four oracles, and the sweep says "1 root cause (4 oracles)".

This module imports no torch: workers do (``fuzzkv.executors.worker``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from fuzzkv import rootcause
from fuzzkv.config import DEFAULT_DB, RunConfig
from fuzzkv.errors import UsageError
from fuzzkv.expected import expected_reason
from fuzzkv.matrix import STATES, Cell, Row
from fuzzkv.oracles import ORACLES

# The oracles a sweep runs by default: every one of the transformers lane.
SWEEP_ORACLES = tuple(name for name, oracle in ORACLES.items() if oracle.runs_on("hf") and oracle.default)
# A worker gets this multiple of --max-time-per-model, plus a fixed allowance for building the model,
# calibrating and checking the canaries, before it counts as a hang and is killed.
HANG_FACTOR, HANG_ALLOWANCE = 3.0, 180.0


@dataclass(frozen=True)
class SweepConfig:
    """Settings of one ``fuzzkv sweep``."""

    models: tuple[str, ...]
    scale: str = "tiny"
    oracles: tuple[str, ...] = SWEEP_ORACLES
    max_examples: int = 25
    max_time_per_model: float = 300.0
    shard: tuple[int, int] = (1, 1)  # (I, N): this process sweeps the I-th of N deterministic parts
    workers: int = 1
    db_url: str = DEFAULT_DB
    seed: int = RunConfig.seed  # the defaults a sweep shares with fuzzkv run are run's (fuzzkv.config.SETTINGS)
    dtype: str = RunConfig.dtype
    grace: float = HANG_ALLOWANCE  # seconds past the search's time a worker may take (build, calibration)
    device: str = RunConfig.device
    backend: str = RunConfig.backend

    def __post_init__(self) -> None:
        index, count = self.shard
        if not 1 <= index <= count:
            raise UsageError(f"--shard must be I/N with 1 <= I <= N, got {index}/{count}.", tip="e.g. --shard 2/4")
        if not 1 <= self.workers <= 64:
            raise UsageError(f"--workers must be between 1 and 64, got {self.workers}.")
        if not 0 < self.max_time_per_model <= 24 * 3600:
            raise UsageError(f"--max-time-per-model must be between 0 and a day of seconds, got {self.max_time_per_model}.")
        # Validate the per-model settings once, here, with the same rules as ``fuzzkv run``.
        self.run_config(self.models[0] if self.models else "-")

    def run_config(self, model: str) -> RunConfig:
        """The ``fuzzkv run`` settings one architecture of the sweep is fuzzed with."""
        return RunConfig(model=model, scale=self.scale, oracles=self.oracles, max_examples=self.max_examples,
                         max_time=self.max_time_per_model, db_url=self.db_url, seed=self.seed, dtype=self.dtype,
                         device=self.device, backend=self.backend)

    @property
    def hang_after(self) -> float:
        return self.max_time_per_model * HANG_FACTOR + self.grace

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(models=list(self.models), oracles=list(self.oracles), shard=f"{self.shard[0]}/{self.shard[1]}")
        data["db_url"] = RunConfig(model="-", db_url=self.db_url).to_dict()["db_url"]  # the password redacted
        return data


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard must be I/N, got {text!r}.", tip="e.g. --shard 1/4 for the first of four parts") from None
    if not 1 <= index <= count:
        raise UsageError(f"--shard must be I/N with 1 <= I <= N, got {text}.", tip="e.g. --shard 2/4")
    return index, count


def shard(models: Iterable[str], index: int, count: int) -> list[str]:
    """The ``index``-th (1-based) of ``count`` parts of ``models``, sorted by name then dealt round-robin:
    the same list and count give the same parts on every machine, and each name lands in exactly one."""
    ordered = sorted(set(models))
    return [name for position, name in enumerate(ordered) if position % count == index - 1]


# -- the matrix -------------------------------------------------------------------------------

def row_from_result(result: dict[str, Any], oracles: tuple[str, ...]) -> Row:
    """A worker's result (see ``fuzzkv.executors.worker``) as a matrix row, with expected findings
    marked and findings grouped into root causes."""
    if result["status"] != "ran":
        cell = Cell(result["status"], detail=result.get("reason", ""))
        return Row(result["model"], result["status"], result.get("reason", ""), result.get("seconds", 0.0),
                   result.get("source", ""), cells={name: cell for name in oracles})
    row = Row(result["model"], "ran", "", result["seconds"], result.get("source", ""), result.get("run_id"))
    for name in oracles:
        row.cells[name] = _cell(name, result)
    row.root_causes = root_causes(result["model_type"], result["failures"])
    return row


def _cell(oracle: str, result: dict[str, Any]) -> Cell:
    if oracle in result["not_applicable"]:
        return Cell("not applicable", detail=result["not_applicable"][oracle])
    ran = result["oracles"].get(oracle)
    if ran is None:
        return Cell("not applicable", detail="this backend does not run it")
    found = [f for f in result["failures"] if f["oracle"] == oracle]
    if not found:
        blind = result["blind"].get("hf")
        if blind:
            return Cell("blind", ran["examples"], detail=blind)
        return Cell("clean", ran["examples"]) if ran["examples"] else Cell("untested", 0, detail="no example ran")
    worst = max(found, key=lambda f: (f["kind"] == "error", f["max_abs_diff"] or 0.0))
    ids = [f["stored_id"] for f in found if f["stored_id"] is not None]
    if all(f["status"] == "flaky" for f in found):
        return Cell("flaky", ran["examples"], worst["kind"], worst["max_abs_diff"], worst["summary"], ids)
    reasons = [expected_reason(result["model_type"], oracle, f["case"]) for f in found if f["status"] != "flaky"]
    if all(reasons):
        return Cell("expected", ran["examples"], worst["kind"], worst["max_abs_diff"], reasons[0] or "", ids)
    return Cell("finding", ran["examples"], worst["kind"], worst["max_abs_diff"], worst["summary"], ids)


def root_causes(model_type: str, failures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Findings grouped by root cause (:mod:`fuzzkv.rootcause`: kind, minimal case shape, where it breaks): one bug
    that trips several oracles is one root cause. Flaky and expected findings are left out."""
    kept = [found for found in failures
            if found["status"] != "flaky" and not expected_reason(model_type, found["oracle"], found["case"])]
    causes = []
    for members in rootcause.group(kept, rootcause.of_json):
        first = members[0]
        causes.append({"shape": rootcause.describe_shape(first["case"]), "where": first.get("where"),
                       "kind": first["kind"], "oracles": rootcause.oracles_of(members, lambda f: f["oracle"]),
                       "max_abs_diff": max(f["max_abs_diff"] or 0.0 for f in members),
                       "failures": [f["stored_id"] for f in members if f["stored_id"] is not None]})
    return causes


# -- running ----------------------------------------------------------------------------------

Progress = Callable[[Row, int, int], None]


@dataclass(frozen=True)
class Task:
    """One unit of a sweep or campaign: one architecture fuzzed with one sweep's settings (oracle set, dtype,
    device, backend) by one worker."""

    config: SweepConfig
    model: str
    labelled: bool = False  # a campaign's row names its dtype, device and backend (a sweep has one of each)

    @property
    def label(self) -> str:
        if not self.labelled:
            return self.model
        return f"{self.model} [{self.config.dtype}, {self.config.device}, {self.config.backend}]"

    def settings(self) -> str:
        """The sweep's settings as the worker reads them (JSON, the database URL unredacted)."""
        return json.dumps(self.config.to_dict() | {"db_url": self.config.db_url})


Collect = Callable[[Task, dict[str, Any]], None]
Execute = Callable[[list[Task], Collect], None]


def tasks_of(configs: list[SweepConfig]) -> list[Task]:
    """Every (settings, model) pair of ``configs``, each labelled with its settings when there are several."""
    return [Task(config, model, len(configs) > 1) for config in configs for model in config.models]


def run_sweep(config: SweepConfig | list[SweepConfig], execute: Execute, progress: Progress,
              done: dict[Task, Row] | None = None) -> list[Row]:
    """Fuzz every task of ``config`` (one sweep, or a campaign's several) through ``execute`` (an executor: it
    calls back once per task with the worker's result), except those in ``done`` (rows already stored, see
    ``fuzzkv.campaign``); returns the rows in task order."""
    tasks = tasks_of(config if isinstance(config, list) else [config])
    rows: dict[Task, Row] = {task: row for task, row in (done or {}).items() if task in tasks}
    for row in rows.values():
        progress(row, len(rows), len(tasks))

    def collect(task: Task, result: dict[str, Any]) -> None:
        row = row_from_result(result, task.config.oracles)
        row.model = task.label
        rows[task] = row
        progress(row, len(rows), len(tasks))

    execute([task for task in tasks if task not in rows], collect)
    return [rows[task] for task in tasks if task in rows]


def matrix(config: SweepConfig, rows: list[Row], started: float) -> dict[str, Any]:
    """The sweep as stored and printed with ``--json``."""
    counts = {state: sum(cell.state == state for row in rows for cell in row.cells.values()) for state in STATES}
    return {"settings": config.to_dict(), "oracles": list(config.oracles), "rows": [row.to_dict() for row in rows],
            "counts": counts, "root_causes": sum(len(row.root_causes) for row in rows),
            "seconds": round(time.monotonic() - started, 1)}


def _any_cell(rows: list[Row], state: str) -> bool:
    return any(cell.state == state for row in rows for cell in row.cells.values())


def has_findings(rows: list[Row]) -> bool:
    return _any_cell(rows, "finding")


def has_failed(rows: list[Row]) -> bool:
    """An architecture whose worker crashed or hung: a bug in the library (or in fuzzkv), never a pass."""
    return any(row.status in ("crashed", "hang") for row in rows)


def is_blind(rows: list[Row]) -> bool:
    return _any_cell(rows, "blind")


def is_untested(rows: list[Row]) -> bool:
    """A cell whose oracle applies but ran no example: a sweep that tested nothing there is not clean."""
    return _any_cell(rows, "untested")
