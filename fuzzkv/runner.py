"""The run: load the backend, settle the tolerance, search each oracle, store, emit.

Each oracle gets its own Hypothesis search, so every failure is shrunk for the property
it breaks and one oracle's bug cannot hide another's. The runner never prints: it emits
events (:mod:`fuzzkv.events`) for reporters to show.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable

from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings, target

from fuzzkv import __version__, events
from fuzzkv.backends import Backend, load_backend
from fuzzkv.case import Case
from fuzzkv.config import RunConfig
from fuzzkv.db import FailureRecord, Store
from fuzzkv.oracles import ORACLES, Oracle
from fuzzkv.strategies import CaseSpace
from fuzzkv.tolerance import Tolerance, calibrate, fixed
from fuzzkv.verdict import Verdict

Emit = Callable[[object], None]


class OutOfTime(BaseException):
    """Stops a search at --max-time. A BaseException, so Hypothesis does not treat it as a failure."""


class CaseFailed(Exception):
    """Raised inside the Hypothesis test so it shrinks; carries the verdict."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.summary())
        self.verdict = verdict


_FAILURE_TYPES: dict[tuple, type] = {}


def failure_type(verdict: Verdict) -> type:
    """One exception class per (oracle, kind, error type): Hypothesis keeps distinct bugs apart by type."""
    key = (verdict.oracle, verdict.kind, verdict.error_type)
    if key not in _FAILURE_TYPES:
        name = "".join(part.title() for part in f"{verdict.oracle}-{verdict.kind}".split("-"))
        _FAILURE_TYPES[key] = type(f"{name}{verdict.error_type or ''}", (CaseFailed,), {})
    return _FAILURE_TYPES[key]


def library_versions() -> dict[str, str]:
    """Versions that decide whether a stored failure still reproduces."""
    versions = {"python": platform.python_version(), "fuzzkv": __version__}
    for package in ("torch", "transformers", "hypothesis", "transformer_lens"):
        try:
            versions[package] = metadata.version(package.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def fingerprint(model: str, backend: str, verdict: Verdict) -> str:
    """Identity of a failure for de-duplication: same model, oracle, kind and minimal case."""
    key = "|".join((model, backend, verdict.oracle, verdict.kind, verdict.error_type or "", verdict.case.to_json()))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def case_space(config: RunConfig, backend: Backend) -> CaseSpace:
    info = backend.info
    return CaseSpace(vocab_size=info.vocab_size, special_ids=info.special_ids, max_batch=config.max_batch,
                     max_prompt_len=config.prompt_len_cap, max_new_tokens=config.new_tokens_cap,
                     max_positions=info.max_positions, sliding_windows=info.sliding_windows, dtype=config.dtype)


@dataclass
class Run:
    """One fuzzing run over a loaded backend."""

    config: RunConfig
    backend: Backend
    store: Store
    emit: Emit
    tolerance: Tolerance | None = None
    run_id: int | None = None
    found: list = field(default_factory=list)
    examples: int = 0

    def execute(self) -> events.RunFinished:
        started = time.monotonic()
        self.tolerance = self.tolerance or self._tolerance()
        self.emit(events.ToleranceChosen(self.tolerance.value, self.tolerance.source))
        self.run_id = self.store.start_run(self.config.to_dict(), library_versions())
        outcome = "interrupted"
        try:
            for i, name in enumerate(self.config.oracles):
                remaining = None
                if self.config.max_time is not None:
                    left = self.config.max_time - (time.monotonic() - started)
                    remaining = max(0.0, left) / (len(self.config.oracles) - i)
                self._search(ORACLES[name], remaining)
            outcome = "failures" if self.found else "clean"
        finally:
            self.store.finish_run(self.run_id, self.examples, outcome)
        return events.RunFinished(self.examples, list(self.found), time.monotonic() - started, self.run_id)

    def _tolerance(self) -> Tolerance:
        if self.config.tolerance is not None:
            return fixed(self.config.tolerance)
        return calibrate(self.backend, self.config.dtype)

    def _search(self, oracle: Oracle, budget: float | None) -> None:
        self.emit(events.OracleStarted(oracle.name, oracle.description))
        search = Search(self, oracle, budget)
        verdicts = search.execute()
        for verdict in verdicts:
            self._record(verdict)
        self.examples += search.examples
        self.emit(events.OracleFinished(oracle.name, search.examples, len(verdicts), search.elapsed,
                                        search.stopped_by_time, search.first_failure_at))

    def _record(self, verdict: Verdict) -> None:
        model, backend = self.backend.info.name, self.backend.name
        print_ = fingerprint(model, backend, verdict)
        repro = self.backend.reproduction(verdict.oracle, verdict.case, verdict.tolerance)
        record = FailureRecord(
            fingerprint=print_, model=model, backend=backend, oracle=verdict.oracle, kind=verdict.kind,
            case=verdict.case, max_abs_diff=verdict.metrics.max_abs_diff if verdict.metrics else None,
            tolerance=verdict.tolerance, metrics=verdict.metrics.to_dict() if verdict.metrics else {},
            error=verdict.error, reproduction=repro, versions=library_versions(), run_id=self.run_id)
        stored_id = self.store.save_failure(record)  # committed now: a killed run keeps it
        found = events.FailureFound(verdict, repro, print_, stored_id)
        self.found.append(found)
        self.emit(found)


class Search:
    """The Hypothesis search for one oracle, bounded by examples and time."""

    def __init__(self, run: Run, oracle: Oracle, budget: float | None):
        self.run, self.oracle, self.budget = run, oracle, budget
        self.examples, self.elapsed, self.stopped_by_time = 0, 0.0, False
        self.started = time.monotonic()
        self.seen: dict[Case, Verdict] = {}
        self.failing = False
        self.first_failure_at: int | None = None  # examples run when the first failure appeared

    def check(self, case: Case) -> None:
        """The Hypothesis test body: check one case, raise if it fails."""
        verdict = self.seen.get(case)
        if verdict is None:
            if self._out_of_time():
                if not self.failing:
                    raise OutOfTime()  # nothing found yet: stop the search outright
                return  # shrinking past its time: new candidates pass, known failures still replay
            verdict = self.oracle.check(self.run.backend, case, self.run.tolerance.value)
            self.seen[case] = verdict
            self.examples += 1
            self.run.emit(events.ExampleChecked(self.oracle.name, self.examples, self.run.examples + self.examples,
                                                len(self.run.found), time.monotonic() - self.started))
        if verdict.metrics is not None:
            target(verdict.score, label=self.oracle.name)
        if verdict.failed:
            if not self.failing:
                self.failing, self.first_failure_at = True, self.examples
            raise failure_type(verdict)(verdict)

    def _out_of_time(self) -> bool:
        if self.budget is None:
            return False
        elapsed = time.monotonic() - self.started
        # Shrinking a found failure may take up to twice the budget more: a minimal case is worth it.
        limit = self.budget * (3 if self.failing else 1)
        if elapsed > limit:
            self.stopped_by_time = True
            return True
        return False

    def execute(self) -> list[Verdict]:
        self.started = time.monotonic()
        config = self.run.config
        space = case_space(config, self.run.backend)
        test = settings(
            max_examples=config.max_examples, deadline=None, database=None, verbosity=Verbosity.quiet,
            suppress_health_check=list(HealthCheck), report_multiple_bugs=True,
            phases=(Phase.explicit, Phase.generate, Phase.target, Phase.shrink),
        )(seed(config.seed)(given(self.oracle.strategy(space))(self.check)))
        try:
            test()
            return []
        except OutOfTime:
            return []
        except (CaseFailed, BaseExceptionGroup) as exc:
            return _verdicts(exc)
        finally:
            self.elapsed = time.monotonic() - self.started


def _verdicts(exc: BaseException) -> list[Verdict]:
    """The shrunk verdicts inside what Hypothesis raised; anything else is our own bug."""
    if isinstance(exc, CaseFailed):
        return [exc.verdict]
    if isinstance(exc, BaseExceptionGroup):
        return [v for inner in exc.exceptions for v in _verdicts(inner)]
    raise exc


def run(config: RunConfig, store: Store, emit: Emit, backend: Backend | None = None) -> events.RunFinished:
    """Run ``config``: the entry point the CLI and tests call."""
    backend = backend or load_backend(config)
    emit(events.RunStarted(config.to_dict(), library_versions(), backend.info.source, backend.name))
    finished = Run(config, backend, store, emit).execute()
    emit(finished)
    return finished
