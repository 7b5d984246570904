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


def replay(store: Store, emit: Emit, model: str | None = None) -> events.ReplayFinished:
    """Replay open failures (of ``model``, or all); emits one event per failure."""
    started, counts = time.monotonic(), {"fails": 0, "fixed": 0, "skipped": 0}
    records = sorted(store.failures(model=model, status="open"), key=_settings_key)
    versions = library_versions()
    for key, group in groupby(records, key=_settings_key):
        group = list(group)
        settings = json.loads(key)
        lane = settings.get("backend")
        try:
            config = RunConfig(**{**settings, "backend": "both" if lane == "cross" else lane}, db_url="memory:")
            lanes = load_lanes(config)
            backend = lanes.backends[lane]
        except (UsageError, TypeError, KeyError) as exc:
            reason = (exc.one_line() if isinstance(exc, UsageError)
                      else lanes.unsupported.get(lane) if isinstance(exc, KeyError) and lanes.unsupported
                      else f"stored settings cannot rebuild the model: {exc}")
            emit(events.ReplaySkipped(tuple(r.id for r in group), reason))
            counts["skipped"] += len(group)
            continue
        tolerance = Run(config, lanes, store, lambda event: None, versions=versions).tolerance(lane)
        for record in group:
            outcome = _replay_one(store, backend, record, tolerance.value, emit)
            counts[outcome] += 1
    finished = events.ReplayFinished(counts["fails"], counts["fixed"], counts["skipped"], time.monotonic() - started)
    emit(finished)
    return finished


def _replay_one(store: Store, backend, record: FailureRecord, tolerance: float, emit: Emit) -> str:
    verdict = ORACLES[record.oracle].check(backend, record.case, tolerance)
    outcome = "fails" if verdict.failed else "fixed"
    store.mark(record.id, "open" if verdict.failed else "fixed", seen=verdict.failed)
    emit(events.ReplayChecked(record, verdict, outcome))
    return outcome
