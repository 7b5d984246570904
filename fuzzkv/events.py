"""Events a run emits; console, JSON and (later) HTML/JUnit reporters consume them.

The runner never prints. It calls ``emit(event)`` and reporters decide what to show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from fuzzkv.verdict import Verdict

if TYPE_CHECKING:
    from fuzzkv.db import FailureRecord

# "new": never stored before; "reopened": stored and marked fixed, failing again;
# "known": stored and still open. CI gates on the first two (``--fail-on new``).
Novelty = Literal["new", "reopened", "known"]
# "flaky": failed, then passed when re-run as is.
FoundStatus = Literal["open", "flaky"]
ReplayOutcome = Literal["fails", "fixed", "reopened"]


@dataclass(frozen=True)
class RunStarted:
    settings: dict
    versions: dict
    model_source: str
    backend: str
    # Built at the settings' --scale (a registry name or a model type); False: the model came at its own size (a
    # folder, a GGUF file, a hub id, a factory or an object), whatever --scale says.
    scaled: bool = True

    def size(self, word: str = " scale") -> str:
        """What size the run fuzzed, for a header: "tiny scale" (``word`` follows the scale), or "its own size"
        where --scale did not apply: a header never claims a scale that was not used."""
        return f"{self.settings['scale']}{word}" if self.scaled else "its own size"


@dataclass(frozen=True)
class ToleranceChosen:
    value: float
    source: str
    regression: str | None = None  # set when the measured noise grew past the limit with new libraries
    lane: str = "hf"
    rms_value: float | None = None  # the RMS-over-the-vocabulary bound, where calibrated


@dataclass(frozen=True)
class CanariesChecked:
    """Planted cache bugs checked at a lane's tolerance: each must be caught, or the lane is blind."""

    lane: str
    caught: tuple[str, ...]
    missed: tuple[str, ...]
    not_applicable: tuple[str, ...] = ()
    blind: str | None = None  # why the lane cannot see; the run then never reports "clean"


@dataclass(frozen=True)
class BackendUnsupported:
    """A backend cannot run this model or library version: said once, never a failure."""

    lane: str
    reason: str


@dataclass(frozen=True)
class OracleSkipped:
    """An oracle that has no meaning for this model on this lane (e.g. a static cache for a recurrent
    state): said with the reason, never a failure and never counted as clean."""

    oracle: str
    lane: str
    reason: str


@dataclass(frozen=True)
class Preparing:
    """Progress of the work before a search (building the model, calibrating, checking canaries), which on a
    full-size model takes minutes: a terminal shows it, nothing else records it."""

    step: str  # what is under way, in words
    done: int = 0  # of ``total`` (0 of 0: one step, no count)
    total: int = 0
    elapsed: float = 0.0  # seconds since the step began
    lane: str = "hf"


@dataclass(frozen=True)
class OracleStarted:
    oracle: str
    description: str
    lane: str = "hf"


@dataclass(frozen=True)
class ExampleChecked:
    oracle: str
    examples: int  # examples run for this oracle so far
    total_examples: int
    failures: int
    elapsed: float


@dataclass(frozen=True)
class FailureFound:
    """A shrunk failure: the minimal case, its verdict and a standalone reproduction."""

    verdict: Verdict
    reproduction: str
    fingerprint: str
    stored_id: int | None = None
    lane: str = "hf"
    novelty: Novelty = "new"
    status: FoundStatus = "open"  # ``recheck`` says what the re-run of a flaky failure measured
    recheck: str = ""
    diagnosis: dict = field(default_factory=dict)  # where the minimal case breaks, as stored (see fuzzkv.diagnosis)

    @property
    def is_news(self) -> bool:
        return self.novelty in ("new", "reopened") and not self.is_flaky

    @property
    def is_flaky(self) -> bool:
        return self.status == "flaky"


@dataclass(frozen=True)
class OracleFinished:
    oracle: str
    examples: int
    failures: int
    elapsed: float
    stopped_by_time: bool = False
    first_failure_at: int | None = None  # examples run when the first failure appeared (before shrinking)
    lane: str = "hf"
    # Why this oracle tested less than it was asked to (fewer examples than --max-examples because --max-time ran
    # out, or none at all), None when it did its work: such an oracle is never reported "ok".
    incomplete: str | None = None


def oracle_key(oracle: str, lane: str) -> str:
    """An oracle's key in a run's results: its name on the transformers lane, ``name@lane`` on another."""
    return oracle if lane == "hf" else f"{oracle}@{lane}"


@dataclass(frozen=True)
class RunFinished:
    examples: int
    failures: list = field(default_factory=list)  # FailureFound events, in order
    elapsed: float = 0.0
    run_id: int | None = None
    # Ctrl-C: the run stopped early. ``shrinking`` holds the stored ids of failures found but
    # not yet fully shrunk (each is stored at the smallest case reached).
    interrupted: bool = False
    shrinking: tuple[int, ...] = ()
    # The fatal event: set when an error stopped the run (one line, as the CLI prints it). The
    # reporters still write their output, marked errored, and the CLI exits 2.
    error: str | None = None
    # Lanes that could not see (canaries missed, or a tolerance too large), with why: a run with no
    # failure but a blind lane is "blind", never "clean" (exit code 4).
    blind: dict[str, str] = field(default_factory=dict)
    # Oracles (by oracle_key) asked for that tested less than asked, or were skipped although asked for by name,
    # with why: a run with no failure but an incomplete oracle is "incomplete", never "clean" (exit code 6).
    incomplete: dict[str, str] = field(default_factory=dict)

    @property
    def untested(self) -> bool:
        """Nothing was tested: no example ran, no failure, and the run was not stopped (exit code 5, never clean)."""
        return self.examples == 0 and not self.failures and not self.interrupted and self.error is None


@dataclass(frozen=True)
class ReplayChecked:
    """One stored failure re-run against the installed versions."""

    record: FailureRecord  # as it was stored
    verdict: Verdict
    outcome: ReplayOutcome  # "reopened": it was marked fixed and fails again


@dataclass(frozen=True)
class ReplaySkipped:
    """Stored failures whose model could not be rebuilt here."""

    failure_ids: tuple[int, ...]
    reason: str


@dataclass(frozen=True)
class ReplayFinished:
    failing: int  # open failures that still fail
    fixed: int
    skipped: int
    elapsed: float
    reopened: int = 0  # failures marked fixed that fail again (only with fixed ones included)
