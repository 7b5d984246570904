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
from typing import TYPE_CHECKING, cast

from fuzzkv import events
from fuzzkv.config import DEFAULT_DEADLINE, RunConfig, backend_option_for
from fuzzkv.db import FailureRecord, Store
from fuzzkv.errors import UsageError
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check_within
from fuzzkv.runner import MODEL_SETTINGS, Emit, Run, library_versions
from fuzzkv.verdict import Bounds

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fuzzkv.backends.interface import Lane, Lanes


def _settings_key(record: FailureRecord) -> str:
    return json.dumps({k: record.settings.get(k) for k in MODEL_SETTINGS}, sort_keys=True, default=str)


def replay(store: Store, emit: Emit, model: str | None = None, *, include_fixed: bool = False,
           deadline: float | None = None, trust_remote_code: bool = False) -> events.ReplayFinished:
    """Replay open failures (of ``model``, or all), and fixed ones too with ``include_fixed`` (a fixed
    failure that fails again is re-opened); emits one event per failure. Each case runs under
    ``deadline`` seconds, or the deadline of the run that stored it: a stored hang fails again, in time.
    ``trust_remote_code`` (``--trust-remote-code``): a model folder's own code may run, whatever the run that stored
    the failure was given (a store never opts in for the user); without it such a failure is skipped, saying so."""
    started, counts = time.monotonic(), {"fails": 0, "fixed": 0, "skipped": 0, "reopened": 0}
    statuses = ("open", "fixed") if include_fixed else ("open",)
    records = sorted((r for s in statuses for r in store.failures(model=model, status=s)), key=_settings_key)
    versions = library_versions()
    run_deadlines = {run["id"]: (run["settings"] or {}).get("deadline", DEFAULT_DEADLINE) for run in store.runs()}
    group: Iterator[FailureRecord] | list[FailureRecord]  # each group is listed once taken
    for key, group in groupby(records, key=_settings_key):
        group = list(group)
        settings = json.loads(key)
        lane_name = settings.get("backend")
        # Each case runs under --deadline, or the deadline of the run that stored it.
        limit = deadline if deadline is not None else min(run_deadlines.get(r.run_id, DEFAULT_DEADLINE) for r in group)
        try:
            config, lanes = _rebuild(settings, lane_name, limit, trust_remote_code)
        except Skip as skip:
            emit(events.ReplaySkipped(tuple(cast(int, r.id) for r in group), str(skip)))  # stored records have ids
            counts["skipped"] += len(group)
            continue
        tolerance = Run(config, lanes, store, lambda event: None, versions=versions,
                        canaries=False).tolerance(lane_name)
        for record in group:
            if record.oracle not in ORACLES:  # stored by another fuzzkv version
                emit(events.ReplaySkipped((cast(int, record.id),), f"unknown oracle {record.oracle!r}"))
                counts["skipped"] += 1
                continue
            counts[_replay_one(store, lanes.lanes[lane_name], record, tolerance.bounds, limit, emit)] += 1
    finished = events.ReplayFinished(counts["fails"], counts["fixed"], counts["skipped"], time.monotonic() - started,
                                     counts["reopened"])
    emit(finished)
    return finished


class Skip(Exception):
    """Stored failures that cannot be replayed here; the message says why."""


def _rebuild(settings: dict, lane: str, deadline: float | None,
             trust_remote_code: bool = False) -> tuple[RunConfig, Lanes]:
    """The config and lanes that recreate a stored failure's model on its lane (running a folder's own model code
    only with ``trust_remote_code``, the replay's own switch)."""
    from fuzzkv.backends.loader import load_lanes

    option = backend_option_for(lane)
    if option is None:
        raise Skip(f"backend {lane!r} is not known to this fuzzkv")
    try:
        config = RunConfig(**{**settings, "backend": option, "trust_remote_code": trust_remote_code},
                           db_url="memory:", deadline=deadline)
        lanes = load_lanes(config)
    except UsageError as exc:
        raise Skip(exc.one_line()) from None
    except TypeError as exc:
        raise Skip(f"stored settings cannot rebuild the model: {exc}") from None
    if lane not in lanes.lanes:
        raise Skip(lanes.unsupported.get(lane, f"backend {lane!r} is not available"))
    return config, lanes


def _replay_one(store: Store, lane: Lane, record: FailureRecord, bounds: Bounds, deadline: float | None,
                emit: Emit) -> events.ReplayOutcome:
    verdict = check_within(ORACLES[record.oracle], lane, record.case, bounds, deadline)
    assert record.id is not None  # read from the store
    outcome: events.ReplayOutcome = ("reopened" if record.status == "fixed" else "fails") if verdict.failed else "fixed"
    store.mark(record.id, "open" if verdict.failed else "fixed", seen=verdict.failed)
    emit(events.ReplayChecked(record, verdict, outcome))
    return outcome
