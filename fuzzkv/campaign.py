"""Campaign files: a nightly campaign (models x dtypes x devices x backends, with budgets) in one small TOML file,
so ``fuzzkv sweep --campaign nightly.toml --executor ray`` is one command; and resuming one: a task whose result
a finished run already stored, for the same settings and library versions, is not run again.

A campaign file::

    [campaign]
    models = ["llama", "gpt2", "my_lib.testing:tiny"]   # or "all"
    dtypes = ["float32", "bfloat16"]
    devices = ["cpu"]                 # "cuda" tasks ask Ray for a GPU
    backends = ["hf", "hf,tl"]        # --backend values
    scale = "tiny"
    oracles = []                      # empty: the sweep's default set
    max_examples = 25
    max_time_per_model = 300          # seconds per task
    seed = 0
    db = "postgresql://fuzz@db-host/fuzzkv"   # every machine writes here (SQLite only on a single node)

This module imports no torch.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzzkv.config import RunConfig
from fuzzkv.errors import UsageError
from fuzzkv.matrix import Cell, Row
from fuzzkv.sweep import SweepConfig, Task, tasks_of

KEYS: dict[str, type | tuple[type, ...]] = {
    "models": (list, str), "dtypes": list, "devices": list, "backends": list, "scale": str, "oracles": list,
    "max_examples": int, "max_time_per_model": (int, float), "seed": int, "db": str, "workers": int}
# What identifies a task's stored run: the settings a worker runs it with (the rest, e.g. max_time, only bounds it).
IDENTITY = ("model", "backend", "scale", "dtype", "device", "oracles", "seed", "max_examples", "init_std",
            "weights_seed")


@dataclass(frozen=True)
class Campaign:
    """A campaign file's settings: the sweeps it stands for are every dtype x device x backend."""

    models: tuple[str, ...] | str  # "all", or names
    dtypes: tuple[str, ...] = ("float32",)
    devices: tuple[str, ...] = ("cpu",)
    backends: tuple[str, ...] = ("hf",)
    options: dict[str, Any] = field(default_factory=dict)  # SweepConfig keywords: scale, oracles, budgets, db

    def sweeps(self, names: Callable[[str], list[str]], db_url: str | None = None) -> list[SweepConfig]:
        """One SweepConfig per (dtype, device, backend); ``names`` expands ``models`` (e.g. ``all``)."""
        models = tuple(names(self.models if isinstance(self.models, str) else ",".join(self.models)))
        options = dict(self.options, **({"db_url": db_url} if db_url else {}))
        return [SweepConfig(models=models, dtype=dtype, device=device, backend=backend, **options)
                for dtype in self.dtypes for device in self.devices for backend in self.backends]


def load(path: str) -> Campaign:
    """Read a campaign file; UsageError (one line) on anything malformed."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read the campaign file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"campaign file {path} is not valid TOML: {exc}.") from None
    table = data.get("campaign")
    if not isinstance(table, dict):
        raise UsageError(f"campaign file {path} has no [campaign] table.", tip="see 'fuzzkv sweep --help'")
    for key, value in table.items():
        kinds = KEYS.get(key)
        if kinds is None:
            raise UsageError(f"unknown key {key!r} in the campaign file {path}.", tip=f"use {', '.join(KEYS)}")
        if not isinstance(value, kinds) or isinstance(value, bool):
            raise UsageError(f"{key} in the campaign file {path} has the wrong type ({type(value).__name__}).")
    if "models" not in table:
        raise UsageError(f"campaign file {path} names no models.", tip='models = ["llama", "gpt2"] or "all"')
    models = table["models"] if isinstance(table["models"], str) else tuple(str(m) for m in table["models"])
    options: dict[str, Any] = {key: table[key] for key in ("scale", "max_examples", "max_time_per_model", "seed",
                                                           "workers") if key in table}
    if table.get("oracles"):
        options["oracles"] = tuple(table["oracles"])
    if "db" in table:
        options["db_url"] = table["db"]
    dtypes, devices, backends = (tuple(str(v) for v in table.get(key, [default]))
                                 for key, default in (("dtypes", "float32"), ("devices", "cpu"), ("backends", "hf")))
    campaign = Campaign(models, dtypes, devices, backends, options)
    for backend in campaign.backends:
        RunConfig(model="-", backend=backend)  # an unknown backend is said here, once
    return campaign


def stored_rows(configs: list[SweepConfig], runs: list[dict[str, Any]], failures: list[Any],
                versions: dict[str, Any]) -> dict[Task, Row]:
    """The tasks of ``configs`` a finished run already stored for the same settings and library versions, each
    as a row (its stored failures as findings, the other cells ``stored``): what resuming a campaign skips."""
    done: dict[Task, Row] = {}
    for task in tasks_of(configs):
        wanted = _identity(task.config.run_config(task.model).to_dict())
        run = next((r for r in reversed(runs) if r.get("outcome") in ("clean", "failures")
                    and _identity(r.get("settings") or {}) == wanted and r.get("versions") == versions), None)
        if run is not None:
            done[task] = _row(task, run, [f for f in failures if f.run_id == run["id"]])
    return done


def _identity(settings: dict[str, Any]) -> tuple:
    return tuple(tuple(value) if isinstance(value, list) else value for value in
                 (settings.get(key) for key in IDENTITY))


def _row(task: Task, run: dict[str, Any], failures: list[Any]) -> Row:
    detail = f"stored by run #{run['id']} (same settings and versions); not run again"
    row = Row(task.label, "ran", detail, 0.0, "stored", run["id"])
    for oracle in task.config.oracles:
        found = [f for f in failures if f.oracle == oracle and f.status != "flaky"]
        row.cells[oracle] = (Cell("finding", kind=found[0].kind, max_abs_diff=found[0].max_abs_diff,
                                  detail=detail, failures=[f.id for f in found]) if found
                             else Cell("stored", detail=detail))
    return row
