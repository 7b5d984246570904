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

from fuzzkv import __version__, baselines, events
from fuzzkv.backends import Backend, load_backend
from fuzzkv.case import Case
from fuzzkv.config import RunConfig
from fuzzkv.db import FailureRecord, Store
from fuzzkv.db.examples import StoreExampleDatabase
from fuzzkv.oracles import ORACLES, Oracle
from fuzzkv.search import Search, failure_key
from fuzzkv.strategies import CaseSpace
from fuzzkv.tolerance import Tolerance
from fuzzkv.verdict import Verdict

Emit = Callable[[object], None]
MODEL_SETTINGS = ("model", "backend", "scale", "dtype", "device", "attn", "init_std", "weights_seed")


def library_versions() -> dict[str, str | None]:
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


def case_size(case: Case) -> tuple:
    """An order on cases, smallest first, to keep the smallest failing case while shrinking."""
    return (case.batch_size, sum(map(len, case.prompts)), case.max_new_tokens, len(case.prefill_chunks),
            case.reuse_batch, sum(map(sum, case.prompts)))


def case_space(config: RunConfig, backend: Backend) -> CaseSpace:
    info = backend.info
    return CaseSpace(vocab_size=info.vocab_size, special_ids=info.special_ids, max_batch=config.max_batch,
                     max_prompt_len=config.prompt_len_cap, max_new_tokens=config.new_tokens_cap,
                     max_positions=info.max_positions, sliding_windows=info.sliding_windows, dtype=config.dtype)


def model_settings(config: RunConfig) -> dict:
    """The settings that rebuild the model under test: stored with each failure for replay."""
    data = config.to_dict()
    return {k: data[k] for k in MODEL_SETTINGS}


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
    versions: dict = field(default_factory=library_versions)
    _pending: dict = field(default_factory=dict)  # failure key -> (row id, case size) while shrinking

    def execute(self) -> events.RunFinished:
        started = time.monotonic()
        self._settle_tolerance()
        self.run_id = self.store.start_run(self.config.to_dict(), self.versions)
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

    def _settle_tolerance(self) -> None:
        growth = None
        if self.tolerance is None:
            self.tolerance, growth = baselines.choose(self.config, self.backend, self.store, self.versions)
        self.emit(events.ToleranceChosen(self.tolerance.value, self.tolerance.source,
                                         growth.message() if growth else None))

    def _search(self, oracle: Oracle, budget: float | None) -> None:
        self.emit(events.OracleStarted(oracle.name, oracle.description))
        search = Search(oracle, self.backend, self.tolerance.value, budget=budget,
                        on_example=lambda n, elapsed: self._progress(oracle, n, elapsed),
                        on_failure=self._keep_smallest)
        verdicts = search.execute(case_space(self.config, self.backend), max_examples=self.config.max_examples,
                                  seed_value=self.config.seed, database=self._examples_db(oracle))
        for verdict in verdicts:
            self._record(verdict)
        self.examples += search.examples
        self.emit(events.OracleFinished(oracle.name, search.examples, len(verdicts), search.elapsed,
                                        search.stopped_by_time, search.first_failure_at))

    def _examples_db(self, oracle: Oracle) -> StoreExampleDatabase:
        namespace = "|".join(str(v) for v in (*model_settings(self.config).values(), oracle.name))
        return StoreExampleDatabase(self.store, namespace)

    def _progress(self, oracle: Oracle, n: int, elapsed: float) -> None:
        self.emit(events.ExampleChecked(oracle.name, n, self.examples + n, len(self.found), elapsed))

    def _failure_record(self, verdict: Verdict) -> FailureRecord:
        model, backend = self.backend.info.name, self.backend.name
        return FailureRecord(
            fingerprint=fingerprint(model, backend, verdict), model=model, backend=backend, oracle=verdict.oracle,
            kind=verdict.kind, case=verdict.case,
            max_abs_diff=verdict.metrics.max_abs_diff if verdict.metrics else None, tolerance=verdict.tolerance,
            metrics=verdict.metrics.to_dict() if verdict.metrics else {}, error=verdict.error,
            reproduction=self.backend.reproduction(verdict.oracle, verdict.case, verdict.tolerance),
            versions=self.versions, settings=model_settings(self.config),
            tolerance_source=self.tolerance.source, run_id=self.run_id)

    def _keep_smallest(self, verdict: Verdict) -> None:
        """Commit each failing case the moment it is seen, if smaller than the one stored: a run
        killed mid-shrink keeps the smallest case it had."""
        key, size = failure_key(verdict), case_size(verdict.case)
        pending = self._pending.get(key)
        if pending is not None and size > pending[1]:
            return
        record = self._failure_record(verdict)
        row = self.store.save_failure(record) if pending is None else self.store.replace_failure(pending[0], record)
        self._pending[key] = (row, size)

    def _record(self, verdict: Verdict) -> None:
        record = self._failure_record(verdict)
        pending = self._pending.pop(failure_key(verdict), None)
        row = self.store.save_failure(record) if pending is None else self.store.replace_failure(pending[0], record)
        found = events.FailureFound(verdict, record.reproduction, record.fingerprint, row)
        self.found.append(found)
        self.emit(found)


def run(config: RunConfig, store: Store, emit: Emit, backend: Backend | None = None) -> events.RunFinished:
    """Run ``config``: the entry point the CLI and tests call."""
    backend = backend or load_backend(config)
    emit(events.RunStarted(config.to_dict(), library_versions(), backend.info.source, backend.name))
    finished = Run(config, backend, store, emit).execute()
    emit(finished)
    return finished
