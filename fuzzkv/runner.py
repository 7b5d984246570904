"""The run: load the backend, settle the tolerance, search each oracle, store, emit.

Each oracle gets its own Hypothesis search, so every failure is shrunk for the property
it breaks and one oracle's bug cannot hide another's. The runner never prints: it emits
events (:mod:`fuzzkv.events`) for reporters to show.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Callable

from fuzzkv import __version__, baselines, events
from fuzzkv.backends import Lanes, load_lanes
from fuzzkv.case import CACHES, Case
from fuzzkv.config import RunConfig
from fuzzkv.db import FailureRecord, Store
from fuzzkv.db.examples import StoreExampleDatabase
from fuzzkv.diagnosis import diagnose
from fuzzkv.oracles import ORACLES, Oracle
from fuzzkv.search import Search, check_within, failure_key
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


def case_space(config: RunConfig, backend) -> CaseSpace:
    info = backend.info
    max_batch = min(config.max_batch, getattr(backend, "max_batch", config.max_batch))
    return CaseSpace(vocab_size=info.vocab_size, special_ids=info.special_ids, max_batch=max_batch,
                     max_prompt_len=config.prompt_len_cap, max_new_tokens=config.new_tokens_cap,
                     max_positions=info.max_positions, sliding_windows=info.sliding_windows, dtype=config.dtype,
                     caches=getattr(backend, "caches", CACHES))


def work_list(config: RunConfig, lanes: Lanes) -> list[tuple[Oracle, str]]:
    """(oracle, lane) pairs to search: the chosen oracles (default all) on every lane they apply to."""
    chosen = [ORACLES[n] for n in config.oracles] if config.oracles else list(ORACLES.values())
    return [(oracle, lane) for oracle in chosen for lane in oracle.lanes if lane in lanes.backends
            and _can_run(lanes.backends[lane], oracle)]


def _can_run(backend, oracle: Oracle) -> bool:
    """Whether a backend offers what an oracle needs (batch size, cache features)."""
    if getattr(backend, "max_batch", oracle.min_batch) < oracle.min_batch:
        return False
    return oracle.needs <= getattr(backend, "features", frozenset())


def model_settings(config: RunConfig, lane: str) -> dict:
    """The settings that rebuild the model under test on ``lane``: stored with each failure for replay."""
    data = {**config.to_dict(), "backend": lane}
    return {k: data[k] for k in MODEL_SETTINGS}


@dataclass
class Run:
    """One fuzzing run over loaded backend lanes."""

    config: RunConfig
    lanes: Lanes
    store: Store
    emit: Emit
    run_id: int | None = None
    found: list = field(default_factory=list)
    examples: int = 0
    versions: dict = field(default_factory=library_versions)
    tolerances: dict = field(default_factory=dict)  # lane -> Tolerance
    _pending: dict = field(default_factory=dict)  # (lane, failure key) -> (row id, case size) while shrinking
    _known: dict = field(default_factory=dict)  # fingerprint -> status of failures stored before this run

    def execute(self) -> events.RunFinished:
        started = time.monotonic()
        for lane, reason in self.lanes.unsupported.items():
            self.emit(events.BackendUnsupported(lane, reason))
        work = work_list(self.config, self.lanes)
        self._known = {record.fingerprint: record.status for record in self.store.failures()}
        self.run_id = self.store.start_run(self.config.to_dict(), self.versions)
        outcome, interrupted = "interrupted", False
        try:
            for i, (oracle, lane) in enumerate(work):
                remaining = None
                if self.config.max_time is not None:
                    left = self.config.max_time - (time.monotonic() - started)
                    remaining = max(0.0, left) / (len(work) - i)
                self._search(oracle, lane, remaining)
            outcome = "failures" if self.found else "clean"
        except KeyboardInterrupt:
            # Ctrl-C: every failing case seen is already committed; end the run and say so.
            interrupted = True
        finally:
            self.store.finish_run(self.run_id, self.examples, outcome, len(self.found) + len(self._pending))
        shrinking = tuple(row for row, _size in self._pending.values())
        return events.RunFinished(self.examples, list(self.found), time.monotonic() - started, self.run_id,
                                  interrupted, shrinking)

    def tolerance(self, lane: str) -> Tolerance:
        """The lane's tolerance, settled on first use; cross-implementation is the sum of both sides'."""
        if lane not in self.tolerances:
            if lane == "cross":
                hf, tl = self.tolerance("hf"), self.tolerance("tl")
                tolerance = Tolerance(hf.value + tl.value, f"HF tolerance {hf.value:.3g} + TransformerLens tolerance "
                                      f"{tl.value:.3g}: each side's own rounding noise", hf.noise + tl.noise,
                                      max(hf.logit_scale, tl.logit_scale), 1.0, 0)
                growth = None
            else:
                tolerance, growth = baselines.choose(self.config, self.lanes.backends[lane], self.store, self.versions)
            self.tolerances[lane] = tolerance
            self.emit(events.ToleranceChosen(tolerance.value, tolerance.source, growth.message() if growth else None,
                                             lane))
        return self.tolerances[lane]

    def _search(self, oracle: Oracle, lane: str, budget: float | None) -> None:
        backend, tolerance = self.lanes.backends[lane], self.tolerance(lane)
        self.emit(events.OracleStarted(oracle.name, oracle.description, lane))
        search = Search(oracle, backend, tolerance.value, budget=budget, deadline=self.config.deadline,
                        on_example=lambda n, elapsed: self._progress(oracle, n, elapsed),
                        on_failure=lambda verdict: self._keep_smallest(verdict, lane))
        try:
            verdicts = search.execute(case_space(self.config, backend), max_examples=self.config.max_examples,
                                      seed_value=self.config.seed, database=self._examples_db(oracle, lane))
        finally:  # counted also when Ctrl-C stops this search
            self.examples += search.examples
        for verdict in verdicts:
            self._record(verdict, lane, oracle)
        self.emit(events.OracleFinished(oracle.name, search.examples, len(verdicts), search.elapsed,
                                        search.stopped_by_time, search.first_failure_at, lane))

    def _examples_db(self, oracle: Oracle, lane: str) -> StoreExampleDatabase:
        namespace = "|".join(str(v) for v in (*model_settings(self.config, lane).values(), oracle.name))
        return StoreExampleDatabase(self.store, namespace)

    def _progress(self, oracle: Oracle, n: int, elapsed: float) -> None:
        self.emit(events.ExampleChecked(oracle.name, n, self.examples + n, len(self.found), elapsed))

    def _failure_record(self, verdict: Verdict, lane: str) -> FailureRecord:
        backend = self.lanes.backends[lane]
        model = backend.info.name
        return FailureRecord(
            fingerprint=fingerprint(model, lane, verdict), model=model, backend=lane, oracle=verdict.oracle,
            kind=verdict.kind, case=verdict.case,
            max_abs_diff=verdict.metrics.max_abs_diff if verdict.metrics else None, tolerance=verdict.tolerance,
            metrics=verdict.metrics.to_dict() if verdict.metrics else {}, error=verdict.error,
            reproduction=backend.reproduction(verdict.oracle, verdict.case, verdict.tolerance),
            versions=self.versions, settings=model_settings(self.config, lane),
            tolerance_source=self.tolerance(lane).source, run_id=self.run_id)

    def _keep_smallest(self, verdict: Verdict, lane: str) -> None:
        """Commit each failing case the moment it is seen, if smaller than the one stored: a run
        killed mid-shrink keeps the smallest case it had."""
        key, size = (lane, failure_key(verdict)), case_size(verdict.case)
        pending = self._pending.get(key)
        if pending is not None and size > pending[1]:
            return
        record = self._failure_record(verdict, lane)
        row = self.store.save_failure(record) if pending is None else self.store.replace_failure(pending[0], record)
        self._pending[key] = (row, size)

    def _record(self, verdict: Verdict, lane: str, oracle: Oracle) -> None:
        again = check_within(oracle, self.lanes.backends[lane], verdict.case, verdict.tolerance, self.config.deadline)
        status, recheck = ("open", "") if again.failed else ("flaky", _measured(verdict, again))
        diagnosis = self._diagnose(verdict, lane) | ({"flaky": recheck} if recheck else {})
        record = replace(self._failure_record(verdict, lane), diagnosis=diagnosis, status=status)
        pending = self._pending.pop((lane, failure_key(verdict)), None)
        row = self.store.save_failure(record) if pending is None else self.store.replace_failure(pending[0], record)
        found = events.FailureFound(verdict, record.reproduction, record.fingerprint, row, lane,
                                    self._novelty(record.fingerprint), status, recheck)
        self.found.append(found)
        self.emit(found)

    def _diagnose(self, verdict: Verdict, lane: str) -> dict:
        """Where the minimal case breaks (see :mod:`fuzzkv.diagnosis`); never fails the run."""
        texts = getattr(self.lanes.hf, "texts", lambda _prompts: None)(verdict.case.prompts)
        found = {"texts": texts} if texts else {}
        if verdict.kind != "mismatch":
            return found
        try:
            return {**found, **diagnose(self.lanes.backends[lane], verdict, lane)}
        except Exception as exc:  # noqa: BLE001 - a diagnosis is extra: its failure is noted, not raised
            return {"unavailable": f"diagnosis raised {type(exc).__name__}: {exc}"}

    def _novelty(self, fingerprint: str) -> str:
        before = self._known.get(fingerprint)
        return "new" if before is None else "reopened" if before == "fixed" else "known"


def _measured(first: Verdict, again: Verdict) -> str:
    """Both measurements of a flaky case, in words."""
    def said(verdict: Verdict) -> str:
        if verdict.metrics is None:
            return f"{verdict.kind} ({verdict.error})"
        return f"{verdict.kind}, max |diff| {verdict.metrics.max_abs_diff:.3g}"
    return f"first {said(first)}; re-run {said(again)} (tolerance {first.tolerance:.3g})"


def run(config: RunConfig, store: Store, emit: Emit, lanes: Lanes | None = None) -> events.RunFinished:
    """Run ``config``: the entry point the CLI and tests call."""
    lanes = lanes or load_lanes(config)
    primary = lanes.primary
    emit(events.RunStarted(config.to_dict(), library_versions(), primary.info.source, _backend_line(lanes)))
    finished = Run(config, lanes, store, emit).execute()
    emit(finished)
    return finished


def _backend_line(lanes: Lanes) -> str:
    names = list(lanes.backends) + [f"{lane} (unsupported)" for lane in lanes.unsupported]
    tl = lanes.backends.get("tl")
    return ", ".join(names) + (f" ({tl.api})" if tl is not None else "")
