"""The store: where runs and their shrunk failures are kept.

Modelled on Hypothesis's ``database.py``: a small abstract class, small implementations
(:class:`MemoryStore` for tests, :class:`~fuzzkv.db.sql.SqlStore` for SQLite), and bad
stored data treated as a miss, never a crash. Only this package imports sqlalchemy.
"""

from __future__ import annotations

import itertools
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from fuzzkv.case import Case


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class FailureRecord:
    """One shrunk failure as stored: readable JSON fields, never pickled objects."""

    fingerprint: str
    model: str
    backend: str
    oracle: str
    kind: str
    case: Case
    max_abs_diff: float | None
    tolerance: float
    metrics: dict
    error: str | None
    reproduction: str
    versions: dict
    id: int | None = None
    run_id: int | None = None
    status: str = "open"
    times_seen: int = 1
    first_seen: datetime = field(default_factory=now)
    last_seen: datetime = field(default_factory=now)

    def to_dict(self) -> dict:
        return {
            "id": self.id, "fingerprint": self.fingerprint, "model": self.model, "backend": self.backend,
            "oracle": self.oracle, "kind": self.kind, "case": self.case.to_dict(),
            "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "metrics": self.metrics,
            "error": self.error, "reproduction": self.reproduction, "versions": self.versions,
            "run_id": self.run_id, "status": self.status, "times_seen": self.times_seen,
            "first_seen": self.first_seen.isoformat(), "last_seen": self.last_seen.isoformat(),
        }


class Store(ABC):
    """Abstract store of runs and failures."""

    @abstractmethod
    def start_run(self, settings: dict, versions: dict) -> int:
        """Record a run's start; returns its id."""

    @abstractmethod
    def finish_run(self, run_id: int, examples: int, outcome: str) -> None:
        """Record a run's end."""

    @abstractmethod
    def save_failure(self, record: FailureRecord) -> int:
        """Store a failure at once (committed); a known fingerprint updates the existing row."""

    @abstractmethod
    def failures(self, model: str | None = None) -> list[FailureRecord]:
        """Stored failures, oldest first; rows that cannot be read are skipped."""

    def close(self) -> None:
        """Release connections."""


class MemoryStore(Store):
    """An in-memory store with the same behaviour as the SQL store: for tests."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.runs: dict[int, dict] = {}
        self._failures: dict[str, FailureRecord] = {}

    def start_run(self, settings, versions):
        run_id = next(self._ids)
        self.runs[run_id] = {"settings": json.loads(json.dumps(settings)), "versions": dict(versions),
                             "started": now(), "finished": None, "examples": 0, "outcome": "running"}
        return run_id

    def finish_run(self, run_id, examples, outcome):
        self.runs[run_id].update(finished=now(), examples=examples, outcome=outcome)

    def save_failure(self, record):
        known = self._failures.get(record.fingerprint)
        if known:
            record = replace(known, times_seen=known.times_seen + 1, last_seen=now(), status="open")
        else:
            record = replace(record, id=len(self._failures) + 1)
        self._failures[record.fingerprint] = record
        return record.id

    def failures(self, model=None):
        return [r for r in self._failures.values() if model is None or r.model == model]


def check_url(url: str) -> None:
    """Validate a store URL before anything is written (raises StoreError)."""
    if url != "memory:":
        from fuzzkv.db.sql import check_url as check_sql_url

        check_sql_url(url)


def open_store(url: str) -> Store:
    """Open the store at ``url``: ``memory:`` or an SQLAlchemy URL (SQLite by default)."""
    if url == "memory:":
        return MemoryStore()
    from fuzzkv.db.sql import SqlStore

    return SqlStore(url)
