"""An in-memory store with the same behaviour as the SQL one: for tests and ``--db memory:``."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

from fuzzkv.db.interface import REPLACED_FIELDS, BaselineRecord, FailureRecord, Status, Store, now


class MemoryStore(Store):
    """An in-memory store with the same behaviour as :class:`~fuzzkv.db.sql.SqlStore`: for tests."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._runs: dict[int, dict[str, Any]] = {}
        self._failures: dict[int, FailureRecord] = {}
        self._baselines: list[BaselineRecord] = []
        self._examples: dict[bytes, list[bytes]] = {}
        self._sweeps: list[dict[str, Any]] = []

    @property
    def runs_by_id(self) -> dict[int, dict[str, Any]]:
        return self._runs

    def start_run(self, settings: dict[str, Any], versions: dict[str, Any]) -> int:
        run_id = next(self._ids)
        self._runs[run_id] = {"id": run_id, "settings": json.loads(json.dumps(settings)), "versions": dict(versions),
                              "started": now(), "finished": None, "examples": 0, "failures": 0,
                              "outcome": "running"}
        return run_id

    def finish_run(self, run_id: int, examples: int, outcome: str, failures: int = 0) -> None:
        self._runs[run_id].update(finished=now(), examples=examples, outcome=outcome, failures=failures)

    def runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._runs.values()]

    def save_sweep(self, settings: dict[str, Any], versions: dict[str, Any], matrix: dict[str, Any]) -> int:
        sweep_id = len(self._sweeps) + 1
        self._sweeps.append({"id": sweep_id, "created": now(), "settings": json.loads(json.dumps(settings)),
                             "versions": dict(versions), "matrix": json.loads(json.dumps(matrix))})
        return sweep_id

    def sweeps(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self._sweeps]

    def _by_fingerprint(self, fingerprint: str) -> FailureRecord | None:
        return next((r for r in self._failures.values() if r.fingerprint == fingerprint), None)

    def save_failure(self, record: FailureRecord) -> int:
        known = self._by_fingerprint(record.fingerprint)
        if known:
            assert known.id is not None  # every stored record has its id
            self._failures[known.id] = replace(known, times_seen=known.times_seen + 1, last_seen=now(),
                                                   status=record.status)
            return known.id
        new_id = max(self._failures, default=0) + 1
        self._failures[new_id] = replace(record, id=new_id)
        return new_id

    def replace_failure(self, failure_id: int, record: FailureRecord) -> int:
        current = self._failures.get(failure_id)
        known = self._by_fingerprint(record.fingerprint)
        if known and known.id != failure_id:
            self._failures.pop(failure_id, None)
            return self.save_failure(record)
        if current is None:
            return self.save_failure(record)
        fields = {name: getattr(record, name) for name in REPLACED_FIELDS}
        self._failures[failure_id] = replace(current, **fields, last_seen=now())
        return failure_id

    def failures(self, model: str | None = None, status: str | None = None) -> list[FailureRecord]:
        return [r for _, r in sorted(self._failures.items())
                if (model is None or r.model == model) and (status is None or r.status == status)]

    def failure(self, failure_id: int) -> FailureRecord | None:
        return self._failures.get(failure_id)

    def mark(self, failure_id: int, status: Status, *, seen: bool = False) -> None:
        record = self._failures.get(failure_id)
        if record is None:
            return
        if seen:
            record = replace(record, times_seen=record.times_seen + 1, last_seen=now())
        self._failures[failure_id] = replace(record, status=status)

    def save_baseline(self, baseline: BaselineRecord) -> int:
        stored = replace(baseline, id=len(self._baselines) + 1)
        self._baselines.append(stored)
        assert stored.id is not None  # set just above
        return stored.id

    def baselines(self, key: tuple[str, ...]) -> list[BaselineRecord]:
        return [b for b in reversed(self._baselines) if b.key() == tuple(key)]

    def example_fetch(self, key: bytes) -> list[bytes]:
        return list(self._examples.get(key, []))

    def example_save(self, key: bytes, value: bytes) -> None:
        values = self._examples.setdefault(key, [])
        if value not in values:
            values.append(value)

    def example_delete(self, key: bytes, value: bytes) -> None:
        values = self._examples.get(key, [])
        if value in values:
            values.remove(value)
