"""The store's interface (pip-audit style: implementations in their own files): the records it keeps, the abstract
:class:`Store`, and what every implementation shares (statuses, the fields a shrink replaces, URL redaction)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
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


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``: what may be printed, logged or stored."""
    # The user part ends at the LAST "@" (an unescaped "@" in a password is common); a
    # password may also come as a query parameter (libpq's ?password=).
    url = re.sub(r"(://[^/:@]*:).*@(?=[^@]*$)", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", url)
