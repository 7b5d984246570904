"""The run: load the backend, settle the tolerance, search each oracle, store, emit.

Each oracle gets its own Hypothesis search, so every failure is shrunk for the property
it breaks and one oracle's bug cannot hide another's. The runner never prints: it emits
events (:mod:`fuzzkv.events`) for reporters to show.
"""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata

from fuzzkv import baselines, events
from fuzzkv._version import __version__
from fuzzkv.backends.interface import Backend, Lane, Lanes
from fuzzkv.canaries import check_canaries
from fuzzkv.case import PADDING_SIDES, Case
from fuzzkv.config import RunConfig
from fuzzkv.db import FailureRecord, Store
from fuzzkv.db.examples import StoreExampleDatabase
from fuzzkv.diagnosis import diagnose
from fuzzkv.errors import FuzzkvError
from fuzzkv.oracles import ORACLES, Oracle
from fuzzkv.oracles.check import check_within
from fuzzkv.search import Search, failure_key
from fuzzkv.strategies import CaseSpace
from fuzzkv.verdict import Bounds, Tolerance, Verdict

Emit = Callable[[object], None]
MODEL_SETTINGS = ("model", "backend", "scale", "dtype", "device", "attn", "init_std", "weights_seed")


def library_versions() -> dict[str, str | None]:
    """Versions that decide whether a stored failure still reproduces."""
    versions: dict[str, str | None] = {"python": platform.python_version(), "fuzzkv": __version__,
                                       "calibration": baselines.CALIBRATION_METHOD}
    for package in ("torch", "transformers", "hypothesis", "transformer_lens", "torchtune"):
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
    return (case.batch_size, sum(map(len, case.prompts)) + sum(map(len, case.encoder)), case.max_new_tokens,
            len(case.prefill_chunks), case.reuse_batch, sum(map(sum, case.prompts)) + sum(map(sum, case.encoder)))


def case_space(config: RunConfig, lane: Lane) -> CaseSpace:
    info, capabilities = lane.info, lane.capabilities
    max_batch = min(config.max_batch, capabilities.max_batch or config.max_batch)
    # A lane that holds few positions (a cross lane kept within a sliding window) leaves room for a 1-token prompt.
    new_tokens = min(config.new_tokens_cap, info.max_positions - 1) if info.max_positions else config.new_tokens_cap
    return CaseSpace(vocab_size=info.vocab_size, special_ids=info.special_ids, max_batch=max_batch,
                     max_prompt_len=config.prompt_len_cap, max_new_tokens=new_tokens,
                     max_positions=info.max_positions, sliding_windows=info.sliding_windows, dtype=config.dtype,
                     caches=capabilities.caches, head_dim=info.head_dim, quantizers=capabilities.quantizers,
                     generate_caches=capabilities.generate_caches, padding_modes=capabilities.padding_modes,
                     reset_caches=capabilities.reset_caches, encoder_decoder=info.encoder_decoder,
                     decoder_start=info.decoder_start_id, image_token=info.image_token_id,
                     image_tokens=info.image_tokens, image_open=info.image_open_id, image_close=info.image_close_id,
                     image_markers=info.image_marker_ids,
                     # an encoder-decoder batch pads its encoder inputs (on the right), never its decoder prompts
                     padding_sides=("left",) if info.encoder_decoder else PADDING_SIDES)


def work_list(config: RunConfig, lanes: Lanes) -> list[tuple[Oracle, str]]:
    """(oracle, lane) pairs to search: the chosen oracles (default all) on every lane they apply to
    whose declared capabilities allow them."""
    return [(oracle, name) for oracle, name, reason in candidates(config, lanes) if reason is None]


def skipped(config: RunConfig, lanes: Lanes) -> list[tuple[Oracle, str, str]]:
    """(oracle, lane, why) for the chosen oracles a loaded lane's capabilities rule out."""
    return [(oracle, name, reason) for oracle, name, reason in candidates(config, lanes) if reason is not None]


def candidates(config: RunConfig, lanes: Lanes) -> list[tuple[Oracle, str, str | None]]:
    chosen = ([ORACLES[n] for n in config.oracles] if config.oracles
              else [o for o in ORACLES.values() if o.is_default(config.device)])
    return [(oracle, name, lanes.lanes[name].capabilities.why_not(oracle.min_batch, oracle.needs))
            for oracle in chosen for name in lanes.lanes if oracle.runs_on(name)]


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
    _measured: dict = field(default_factory=dict)  # backend name -> Tolerance
    _growth: str | None = None  # the last measurement's noise-growth message
    blind: dict = field(default_factory=dict)  # lane -> why it cannot see (canaries missed, tolerance too large)
    canaries: bool = True  # replay re-checks stored cases only: it has no search to prove
    _pending: dict = field(default_factory=dict)  # (lane, failure key) -> (row id, case size) while shrinking
    _known: dict = field(default_factory=dict)  # fingerprint -> status of failures stored before this run
    incomplete: dict = field(default_factory=dict)  # oracle key -> why it tested less than asked
    # When the run began (time.monotonic()): --max-time bounds the whole run from here, the model's build included
    # when the caller started the clock before building it.
    started: float = field(default_factory=time.monotonic)

    def execute(self) -> tuple[events.RunFinished, FuzzkvError | None]:
        started = self.started
        for lane, reason in self.lanes.unsupported.items():
            self.emit(events.BackendUnsupported(lane, reason))
        for oracle, lane, reason in skipped(self.config, self.lanes):
            self.emit(events.OracleSkipped(oracle.name, lane, reason))
            if self.config.oracles:  # asked for by name: a run that could not run it has not tested what was asked
                self.incomplete[events.oracle_key(oracle.name, lane)] = f"not applicable: {reason}"
        work = work_list(self.config, self.lanes)
        self._known = {record.fingerprint: record.status for record in self.store.failures()}
        self.run_id = self.store.start_run(self.config.to_dict(), self.versions)
        outcome, interrupted, error = "interrupted", False, None
        try:
            for i, (oracle, lane) in enumerate(work):
                self.tolerance(lane)  # calibration and canaries are spent before the oracle's share is counted
                remaining = None
                if self.config.max_time is not None:
                    left = self.config.max_time - (time.monotonic() - started)
                    remaining = max(0.0, left) / (len(work) - i)
                self._search(oracle, lane, remaining)
            outcome = "failures" if self.found else "clean"
        except KeyboardInterrupt:
            # Ctrl-C: every failing case seen is already committed; end the run and say so.
            interrupted = True
        except FuzzkvError as exc:
            # A fatal error (e.g. the store became unwritable): reporters still write what the run
            # saw, marked errored, before the error reaches the CLI (exit 2).
            outcome, error = "errored", exc
        finally:
            self._finish_row(outcome, error)
        shrinking = tuple(row for row, _size in self._pending.values())
        return events.RunFinished(self.examples, list(self.found), time.monotonic() - started, self.run_id,
                                  interrupted, shrinking, error.one_line() if error else None,
                                  dict(self.blind), dict(self.incomplete)), error

    def _finish_row(self, outcome: str, error: FuzzkvError | None) -> None:
        assert self.run_id is not None  # execute() starts the run before any row is finished
        try:
            self.store.finish_run(self.run_id, self.examples, outcome, len(self.found) + len(self._pending))
        except FuzzkvError:
            if error is None:
                raise  # otherwise the first error is the one to report

    def tolerance(self, lane: str) -> Tolerance:
        """The lane's tolerance, settled on first use by the lane's own rule."""
        if lane not in self.tolerances:
            self._growth = None
            tolerance = self.lanes.lanes[lane].tolerance(self._measure)
            self.tolerances[lane] = tolerance
            self.emit(events.ToleranceChosen(tolerance.value, tolerance.source, self._growth, lane, tolerance.rms_value))
            if self.canaries:
                self._check_canaries(lane, tolerance)
        return self.tolerances[lane]

    def _check_canaries(self, lane: str, tolerance: Tolerance) -> None:
        """Prove the lane can see at this tolerance (see :mod:`fuzzkv.canaries`); a blind lane is said so."""
        report = check_canaries(self.lanes.lanes[lane], tolerance, self.config.deadline,
                                self._progress_of("checking canaries", lane))
        if report.blind:
            self.blind[lane] = report.blind
        self.emit(events.CanariesChecked(lane, report.caught, report.missed, report.not_applicable, report.blind))

    def _measure(self, backend: Backend) -> Tolerance:
        """One backend's tolerance: a stored baseline, or a new measurement (once per run)."""
        if backend.name not in self._measured:
            tolerance, growth = baselines.choose(self.config, backend, self.store, self.versions,
                                                 self._progress_of("calibrating", backend.name))
            self._measured[backend.name] = tolerance
            self._growth = growth.message() if growth else None
        return self._measured[backend.name]

    def _progress_of(self, step: str, lane: str) -> Callable[[int, int], None]:
        """A progress callback saying ``step`` as a Preparing event, with the seconds since it began."""
        began = time.monotonic()
        return lambda done, total: self.emit(events.Preparing(step, done, total, time.monotonic() - began, lane))

    def _search(self, oracle: Oracle, lane: str, budget: float | None) -> None:
        tolerance = self.tolerance(lane)
        self.emit(events.OracleStarted(oracle.name, oracle.description, lane))
        search = Search(oracle, self.lanes.lanes[lane], tolerance.bounds, budget=budget, deadline=self.config.deadline,
                        on_example=lambda n, elapsed: self._progress(oracle, n, elapsed),
                        on_failure=lambda verdict: self._keep_smallest(verdict, lane))
        try:
            verdicts = search.execute(case_space(self.config, self.lanes.lanes[lane]), max_examples=self.config.max_examples,
                                      seed_value=self.config.seed, database=self._examples_db(oracle, lane))
        finally:  # counted also when Ctrl-C stops this search
            self.examples += search.examples
        for verdict in verdicts:
            self._record(verdict, lane, oracle)
        short = shortfall(search.examples, self.config.max_examples, search.stopped_by_time, bool(verdicts))
        if short is not None:
            self.incomplete[events.oracle_key(oracle.name, lane)] = short
        self.emit(events.OracleFinished(oracle.name, search.examples, len(verdicts), search.elapsed,
                                        search.stopped_by_time, search.first_failure_at, lane, short))

    def _examples_db(self, oracle: Oracle, lane: str) -> StoreExampleDatabase:
        namespace = "|".join(str(v) for v in (*model_settings(self.config, lane).values(), oracle.name))
        return StoreExampleDatabase(self.store, namespace)

    def _progress(self, oracle: Oracle, n: int, elapsed: float) -> None:
        self.emit(events.ExampleChecked(oracle.name, n, self.examples + n, len(self.found), elapsed))

    def _failure_record(self, verdict: Verdict, lane: str) -> FailureRecord:
        model = self.lanes.info.name
        return FailureRecord(
            fingerprint=fingerprint(model, lane, verdict), model=model, backend=lane, oracle=verdict.oracle,
            kind=verdict.kind, case=verdict.case,
            max_abs_diff=verdict.metrics.max_abs_diff if verdict.metrics else None, tolerance=verdict.tolerance,
            metrics=verdict.metrics.to_dict() if verdict.metrics else {}, error=verdict.error,
            reproduction=self.lanes.lanes[lane].reproduction(ORACLES[verdict.oracle], verdict.case,
                                                             self._bounds_of(verdict, lane)),
            versions=self.versions, settings=model_settings(self.config, lane),
            tolerance_source=self.tolerance(lane).source, run_id=self.run_id)

    def _bounds_of(self, verdict: Verdict, lane: str) -> Bounds:
        """The run's bounds, with the failing comparison's own where it carried one (see ``Bounds.lossy``)."""
        bounds = self.tolerance(lane).bounds
        return replace(bounds, lossy=verdict.tolerance) if verdict.own_bounds else bounds

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
        again = self._recheck(verdict, lane, oracle)
        status: events.FoundStatus
        recheck: str
        status, recheck = ("open", "") if again.failed else ("flaky", _measured(verdict, again))
        diagnosis = self._diagnose(verdict, lane) | ({"flaky": recheck} if recheck else {})
        record = replace(self._failure_record(verdict, lane), diagnosis=diagnosis, status=status)
        pending = self._pending.pop((lane, failure_key(verdict)), None)
        row = self.store.save_failure(record) if pending is None else self.store.replace_failure(pending[0], record)
        found = events.FailureFound(verdict, record.reproduction, record.fingerprint, row, lane,
                                    self._novelty(record.fingerprint), status, recheck, diagnosis)
        self.found.append(found)
        self.emit(found)

    def _recheck(self, verdict: Verdict, lane: str, oracle: Oracle) -> Verdict:
        """The minimal case re-run as is, up to RECHECKS times: the first run that passes (the failure is flaky), or
        the last failing one. One re-run would call a bug firing on 30% of calls steady 30% of the time."""
        again = verdict
        for _ in range(RECHECKS):
            again = check_within(oracle, self.lanes.lanes[lane], verdict.case, self.tolerance(lane).bounds,
                                 self.config.deadline)
            if not again.failed:
                break
        return again

    def _diagnose(self, verdict: Verdict, lane: str) -> dict:
        """Where the minimal case breaks (see :mod:`fuzzkv.diagnosis`); never fails the run."""
        texts = self.lanes.lanes[lane].texts(verdict.case.prompts)
        found = {"texts": texts} if texts else {}
        if verdict.kind != "mismatch":
            return found
        try:
            return {**found, **diagnose(self.lanes.lanes[lane], verdict)}
        except Exception as exc:  # noqa: BLE001 - a diagnosis is extra: its failure is noted, not raised
            return {"unavailable": f"diagnosis raised {type(exc).__name__}: {exc}"}

    def _novelty(self, fingerprint: str) -> events.Novelty:
        before = self._known.get(fingerprint)
        return "new" if before is None else "reopened" if before == "fixed" else "known"


# Re-runs of a minimal failing case before it is stored as steady (open): a bug firing on a share p of calls passes
# at least one with probability 1 - p^3 (97% at p = 0.3); a steady one costs two more checks of a minimal case.
RECHECKS = 3

# The fewest examples an oracle stopped by --max-time must have run to count as tested (or --max-examples, where
# smaller). With --max-time, --max-examples is a cap (a nightly job sets it high and lets the budget decide), so
# the ask that a time-boxed oracle must meet is this floor.
MIN_EXAMPLES_IN_TIME = 20


def shortfall(examples: int, asked: int, stopped_by_time: bool, found: bool) -> str | None:
    """Why an oracle's search tested less than asked, or None. A search that found a failure did its work; one that
    ended early because Hypothesis ran out of distinct cases (a small case space) tested everything there was."""
    if found:
        return None
    floor = min(asked, MIN_EXAMPLES_IN_TIME)
    if stopped_by_time and examples < floor:
        return f"{examples} examples, fewer than the {floor} a time-boxed oracle must run: --max-time ran out"
    if examples == 0:
        return f"0 of {asked} examples: every case drawn was refused or discarded"
    return None


def _measured(first: Verdict, again: Verdict) -> str:
    """Both measurements of a flaky case, in words."""
    def said(verdict: Verdict) -> str:
        if verdict.metrics is None:
            return f"{verdict.kind} ({verdict.error})"
        return f"{verdict.kind}, max |diff| {verdict.metrics.max_abs_diff:.3g}"
    return f"first {said(first)}; re-run {said(again)} (tolerance {first.tolerance:.3g})"


def run(config: RunConfig, store: Store, emit: Emit, lanes: Lanes, started: float | None = None) -> events.RunFinished:
    """Run ``config`` on ``lanes`` (see ``fuzzkv.backends.loader.load_lanes``): the entry point the CLI calls.
    ``started``: when the run began (``time.monotonic()``, before the model was built): --max-time counts from there."""
    emit(events.RunStarted(config.to_dict(), library_versions(), lanes.info.source, lanes.description,
                           lanes.info.scaled))
    finished, error = Run(config, lanes, store, emit, started=time.monotonic() if started is None else started).execute()
    emit(finished)
    if error is not None:
        raise error
    return finished
