"""Replay: re-run every open stored failure, without Hypothesis, against the installed versions.

Each stored failure carries its readable case and the settings that rebuild its model, so
replay needs nothing from Hypothesis's example bytes. A case that now passes is marked
fixed; one that still fails has its last-seen time bumped. This is the gate a pull
request runs.
"""

from __future__ import annotations

import json
import time
from itertools import groupby

from fuzzkv import events
from fuzzkv.backends import load_lanes
from fuzzkv.config import RunConfig
from fuzzkv.db import FailureRecord, Store
from fuzzkv.errors import UsageError
from fuzzkv.oracles import ORACLES
from fuzzkv.runner import MODEL_SETTINGS, Emit, Run, library_versions


def _settings_key(record: FailureRecord) -> str:
    return json.dumps({k: record.settings.get(k) for k in MODEL_SETTINGS}, sort_keys=True, default=str)


def replay(store: Store, emit: Emit, model: str | None = None, *, include_fixed: bool = False) -> events.ReplayFinished:
    """Replay open failures (of ``model``, or all), and fixed ones too with ``include_fixed`` (a fixed
    failure that fails again is re-opened); emits one event per failure."""
    started, counts = time.monotonic(), {"fails": 0, "fixed": 0, "skipped": 0, "reopened": 0}
    statuses = ("open", "fixed") if include_fixed else ("open",)
    records = sorted((r for s in statuses for r in store.failures(model=model, status=s)), key=_settings_key)
    versions = library_versions()
    for key, group in groupby(records, key=_settings_key):
        group = list(group)
        settings = json.loads(key)
        lane = settings.get("backend")
        try:
            config, lanes = _rebuild(settings, lane)
        except Skip as skip:
            emit(events.ReplaySkipped(tuple(r.id for r in group), str(skip)))
            counts["skipped"] += len(group)
            continue
        tolerance = Run(config, lanes, store, lambda event: None, versions=versions).tolerance(lane)
        for record in group:
            if record.oracle not in ORACLES:  # stored by another fuzzkv version
                emit(events.ReplaySkipped((record.id,), f"unknown oracle {record.oracle!r}"))
                counts["skipped"] += 1
                continue
            counts[_replay_one(store, lanes.backends[lane], record, tolerance.value, emit)] += 1
    finished = events.ReplayFinished(counts["fails"], counts["fixed"], counts["skipped"], time.monotonic() - started,
                                     counts["reopened"])
    emit(finished)
    return finished


class Skip(Exception):
    """Stored failures that cannot be replayed here; the message says why."""


def _rebuild(settings: dict, lane: str | None):
    """The config and backends that recreate a stored failure's model on its lane."""
    try:
        config = RunConfig(**{**settings, "backend": "both" if lane == "cross" else lane}, db_url="memory:")
        lanes = load_lanes(config)
    except UsageError as exc:
        raise Skip(exc.one_line()) from None
    except TypeError as exc:
        raise Skip(f"stored settings cannot rebuild the model: {exc}") from None
    if lane not in lanes.backends:
        raise Skip(lanes.unsupported.get(lane, f"backend {lane!r} is not available"))
    return config, lanes


def _replay_one(store: Store, backend, record: FailureRecord, tolerance: float, emit: Emit) -> str:
    verdict = ORACLES[record.oracle].check(backend, record.case, tolerance)
    outcome = ("reopened" if record.status == "fixed" else "fails") if verdict.failed else "fixed"
    store.mark(record.id, "open" if verdict.failed else "fixed", seen=verdict.failed)
    emit(events.ReplayChecked(record, verdict, outcome))
    return outcome
