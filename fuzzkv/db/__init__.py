"""The store: fuzzkv's memory of runs, shrunk failures and tolerance baselines.

Modelled on Hypothesis's ``database.py``: a small abstract class, small implementations
(:class:`MemoryStore` for tests, :class:`~fuzzkv.db.sql.SqlStore` for SQLite and other
SQLAlchemy URLs), and bad stored data treated as a miss, never a crash. Only this
package imports sqlalchemy. The readable :class:`~fuzzkv.case.Case` rows are the source
of truth; Hypothesis's own example bytes (kept beside them) are only a head start.
"""

from __future__ import annotations

import itertools
import json
import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from fuzzkv.case import Case

# "open": fails; "fixed": a replay passed; "flaky": failed once, then passed when re-run as is.
Status = Literal["open", "fixed", "flaky"]
STATUSES: tuple[str, ...] = get_args(Status)
# What ``replace_failure`` swaps in: the case, its numbers and whether it re-ran. Identity and history stay.
REPLACED_FIELDS = ("fingerprint", "case", "max_abs_diff", "tolerance", "tolerance_source", "metrics", "error",
                   "reproduction", "kind", "diagnosis", "status")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FailureRecord:
    """One shrunk failure as stored: readable JSON fields, never pickled objects.

    ``settings`` holds what rebuilds the model for ``replay`` (model, backend, scale,
    dtype, device, attn, init_std, weights_seed). ``diagnosis`` holds what the report draws:
    the per-position differences and where in the model the two paths part (see
    :mod:`fuzzkv.diagnosis`); empty when it could not be measured.
    """

    fingerprint: str
    model: str
    backend: str
    oracle: str
    kind: str  # a verdict Kind: "mismatch" or "error"
    case: Case
    max_abs_diff: float | None
    tolerance: float
    metrics: dict[str, Any]
    error: str | None
    reproduction: str
    versions: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    tolerance_source: str = ""
    diagnosis: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    run_id: int | None = None
    status: Status = "open"
    times_seen: int = 1
    first_seen: datetime = field(default_factory=now)
    last_seen: datetime = field(default_factory=now)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(case=self.case.to_dict(), first_seen=self.first_seen.isoformat(),
                    last_seen=self.last_seen.isoformat())
        return data


@dataclass(frozen=True)
class BaselineRecord:
    """A measured tolerance for one model configuration and one set of library versions."""

    model: str
    scale: str
    backend: str
    dtype: str
    device: str
    attn: str
    versions: dict[str, Any]
    value: float
    noise: float
    logit_scale: float
    safety_factor: float
    calibration_prompts: int
    id: int | None = None
    created: datetime = field(default_factory=now)
    rms_value: float | None = None  # schema 3: the RMS bound (None in baselines an older fuzzkv stored)
    rms_noise: float | None = None
    # schema 5: the oracles whose comparisons were measured (None: stored before, when every oracle that ran on the
    # backend was measured)
    oracles: tuple[str, ...] | None = None

    def key(self) -> tuple[str, str, str, str, str, str]:
        return (self.model, self.scale, self.backend, self.dtype, self.device, self.attn)


class Store(ABC):
    """Abstract store of runs, failures, baselines and Hypothesis examples."""

    # -- runs ------------------------------------------------------------------------
    @abstractmethod
    def start_run(self, settings: dict[str, Any], versions: dict[str, Any]) -> int:
        """Record a run's start; returns its id."""

    @abstractmethod
    def finish_run(self, run_id: int, examples: int, outcome: str, failures: int = 0) -> None:
        """Record a run's end: examples checked, failures found and the outcome."""

    @abstractmethod
    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, as plain dicts."""

    # -- sweeps ----------------------------------------------------------------------
    def save_sweep(self, settings: dict[str, Any], versions: dict[str, Any], matrix: dict[str, Any]) -> int:
        """Store one sweep's architecture x oracle matrix; returns its id. (A store that keeps no
        sweeps says so; the sweep's own output still has the matrix.)"""
        raise NotImplementedError(f"{type(self).__name__} keeps no sweeps")

    def sweeps(self) -> list[dict[str, Any]]:
        """Every stored sweep, oldest first, as plain dicts (id, created, settings, versions, matrix)."""
        return []

    # -- failures --------------------------------------------------------------------
    @abstractmethod
    def save_failure(self, record: FailureRecord) -> int:
        """Commit a failure now. A known fingerprint updates that row (times seen, last seen, reopened)."""

    @abstractmethod
    def replace_failure(self, failure_id: int, record: FailureRecord) -> int:
        """Swap a stored failure's case for a smaller one found while shrinking; returns the row's id
        (another row's, when the smaller case is a failure already known: the two are merged)."""

    @abstractmethod
    def failures(self, model: str | None = None, status: str | None = None) -> list[FailureRecord]:
        """Stored failures, oldest first; rows that cannot be read are skipped."""

    @abstractmethod
    def failure(self, failure_id: int) -> FailureRecord | None:
        """One failure, or None when missing or unreadable."""

    @abstractmethod
    def mark(self, failure_id: int, status: Status, *, seen: bool = False) -> None:
        """Set a failure's status; ``seen`` also bumps last seen and times seen."""

    # -- baselines -------------------------------------------------------------------
    @abstractmethod
    def save_baseline(self, baseline: BaselineRecord) -> int:
        """Store a measured baseline."""

    @abstractmethod
    def baselines(self, key: tuple[str, ...]) -> list[BaselineRecord]:
        """Baselines for a configuration key (see ``BaselineRecord.key``), newest first."""

    # -- Hypothesis example bytes ----------------------------------------------------
    @abstractmethod
    def example_fetch(self, key: bytes) -> list[bytes]:
        """Hypothesis example values saved under ``key``."""

    @abstractmethod
    def example_save(self, key: bytes, value: bytes) -> None:
        """Save a Hypothesis example value (idempotent)."""

    @abstractmethod
    def example_delete(self, key: bytes, value: bytes) -> None:
        """Delete a Hypothesis example value (no error when absent)."""

    def close(self) -> None:
        """Release connections."""


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


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``: what may be printed, logged or stored."""
    # The user part ends at the LAST "@" (an unescaped "@" in a password is common); a
    # password may also come as a query parameter (libpq's ?password=).
    url = re.sub(r"(://[^/:@]*:).*@(?=[^@]*$)", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)


def check_url(url: str) -> None:
    """Validate a store URL before anything is written (raises StoreError)."""
    if url != "memory:":
        from fuzzkv.db.sql import check_url as check_sql_url

        check_sql_url(url)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store at ``url``: ``memory:`` or an SQLAlchemy URL (SQLite by default).

    With ``create=False`` (read-only commands) a missing SQLite file is an error, not a new file.
    """
    if url == "memory:":
        return MemoryStore()
    from fuzzkv.db.sql import SqlStore

    return SqlStore(url, create=create)
