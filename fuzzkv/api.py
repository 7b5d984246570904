"""fuzzkv's public Python API: what ``fuzzkv run`` does, callable from Python and pytest.

``fuzz`` searches a model for KV-cache failures and returns a :class:`Result`; ``check`` runs one oracle on one
:class:`~fuzzkv.case.Case`. Both take a model as a name (what ``--model`` takes), a built transformers
``PreTrainedModel`` (used as it is: never re-initialised), or a zero-argument factory returning one. The CLI's
``run`` command is a thin layer over :func:`run`; the pytest plugin over :func:`fuzz`.

Everything this module exports (and ``fuzzkv.__all__`` re-exports) follows semantic versioning: a breaking change
to a signature, a field or a raised type waits for the next major version.

Importing this module imports no torch: a model is loaded when a function is called.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from fuzzkv import events, rootcause
from fuzzkv.case import Case
from fuzzkv.config import DEFAULT_DEADLINE, RunConfig
from fuzzkv.db import check_url, open_store
from fuzzkv.errors import EXIT_BLIND, EXIT_FAILURES, EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNTESTED, UsageError
from fuzzkv.reports.json_report import JsonReporter, failure_json
from fuzzkv.verdict import Verdict

__all__ = ["BlindRun", "Finding", "FindingsFound", "FuzzkvCheckFailed", "IncompleteRun", "Result", "UntestedRun",
           "check", "fuzz", "run"]

FailOn = Literal["any", "new"]
EventSink = Callable[[object], None]


@dataclass(frozen=True)
class Finding:
    """One failure a run found and shrank: its minimal case, its numbers, where it breaks, and a standalone script
    that reproduces it (exits 1 while the bug is there)."""

    verdict: Verdict
    lane: str  # "hf", "tl", "torchtune", or a cross lane ("cross", "cross-torchtune")
    reproduction: str  # a Python script, runnable as it is
    diagnosis: Mapping[str, Any]  # where the minimal case breaks (first layer and part past the threshold)
    fingerprint: str
    stored_id: int | None
    novelty: str  # "new", "known" (stored before, still open) or "reopened" (stored as fixed, fails again)
    status: str  # "open", or "flaky": its re-run passed (stored and shown, never a confirmed failure)
    json: Mapping[str, Any] = field(repr=False)  # this failure as ``fuzzkv run --json`` prints it
    script_path: str | None = None  # where its reproduction script was saved (see Result.save_scripts)

    @property
    def case(self) -> Case:
        return self.verdict.case

    @property
    def oracle(self) -> str:
        return self.verdict.oracle

    @property
    def kind(self) -> str:
        return self.verdict.kind

    @property
    def flaky(self) -> bool:
        return self.status == "flaky"

    @property
    def is_news(self) -> bool:
        """New to the store, or fixed before and failing again (what ``fail_on="new"`` fails on)."""
        return self.novelty in ("new", "reopened") and not self.flaky

    def summary(self) -> str:
        return self.verdict.summary()

    def report(self) -> str:
        """The failure in words: what failed, the minimal case, where it breaks, and where its script is."""
        where = rootcause.where_it_breaks(self.diagnosis)
        lines = [f"{self.summary()} [{self.lane}{', flaky' if self.flaky else ''}]",
                 f"  minimal case: {self.case.to_json()}"]
        if where:
            lines.append(f"  where it breaks: {where}")
        lines.append(f"  reproduce: {_reproduce(self)}")
        return "\n".join(lines)


def _reproduce(finding: Finding) -> str:
    if finding.script_path:
        return f"python {finding.script_path} (exits 1 while the bug is there)"
    return "run its reproduction script (Finding.reproduction) with python: it exits 1 while the bug is there"


class FuzzkvCheckFailed(AssertionError):
    """Raised by :meth:`Result.raise_for_findings`. An ``AssertionError``, so test runners report it as a failed
    assertion."""

    def __init__(self, message: str, result: Result):
        super().__init__(message)
        self.result = result


class FindingsFound(FuzzkvCheckFailed):
    """The run found failures; ``findings`` holds them (each with its minimal case and reproduction script)."""

    def __init__(self, message: str, result: Result, findings: tuple[Finding, ...]):
        super().__init__(message, result)
        self.findings = findings


class BlindRun(FuzzkvCheckFailed):
    """Nothing failed, but a lane could not see (a planted canary bug went unseen): the run proves nothing."""


class UntestedRun(FuzzkvCheckFailed):
    """Nothing was tested: every oracle asked for was skipped or unsupported."""


class IncompleteRun(FuzzkvCheckFailed):
    """Nothing failed, but an oracle tested less than asked (``max_time`` ran out before ``max_examples``, every
    case was refused) or one asked for by name could not run: not clean."""


@dataclass(frozen=True)
class Result:
    """What one fuzzing run found: ``findings``, and whether it could see (``blind``) and tested anything."""

    model: str
    findings: tuple[Finding, ...]
    examples: int
    blind: Mapping[str, str]  # lane -> why it could not see
    untested: bool
    interrupted: bool
    not_applicable: Mapping[str, str]  # "oracle" or "oracle@lane" -> why it was skipped
    unsupported: Mapping[str, str]  # backend -> why it could not be built for this model
    run_id: int | None
    json: Mapping[str, Any] = field(repr=False)  # the run as ``fuzzkv run --json`` prints it
    incomplete: Mapping[str, str] = field(default_factory=dict)  # "oracle" or "oracle@lane" -> why it tested less

    def failing(self, fail_on: FailOn = "any") -> tuple[Finding, ...]:
        """The confirmed findings (flaky ones left out); with ``fail_on="new"`` only those new to the store or
        re-opened after a fix."""
        return tuple(f for f in self.findings if not f.flaky and (fail_on == "any" or f.is_news))

    @property
    def clean(self) -> bool:
        """No confirmed finding, every lane could see, every oracle tested what it was asked to, and the run was not
        interrupted."""
        return self.exit_code() == EXIT_OK

    def exit_code(self, fail_on: FailOn = "any") -> int:
        """The exit code ``fuzzkv run`` gives this result: 0 clean, 1 findings, 4 blind, 5 untested, 6 incomplete,
        130 interrupted."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.failing(fail_on):
            return EXIT_FAILURES
        if self.untested:
            return EXIT_UNTESTED
        if self.blind:
            return EXIT_BLIND
        return EXIT_INCOMPLETE if self.incomplete else EXIT_OK

    def root_causes(self, fail_on: FailOn = "any") -> list[tuple[Finding, ...]]:
        """The confirmed findings grouped by root cause (:mod:`fuzzkv.rootcause`): one bug that several oracles saw
        is one group."""
        return [tuple(group) for group in rootcause.group(self.failing(fail_on),
                                                           lambda f: rootcause.of_event(f, self.model))]

    def save_scripts(self, repro_dir: str | Path | None = None) -> Result:
        """Save every finding's reproduction script in ``repro_dir`` (default: ``fuzzkv-repro`` beside the database
        file, else in the current folder; see :mod:`fuzzkv.reports.scripts`); returns this result with each finding's
        ``script_path`` set."""
        from fuzzkv.reports import scripts

        db_url = (self.json.get("settings") or {}).get("db_url")
        folder = Path(repro_dir) if repro_dir is not None else scripts.default_folder(db_url)
        saved = tuple(replace(f, script_path=str(scripts.save(folder, scripts.file_name(
            stored_id=f.stored_id, oracle=f.oracle, fingerprint=f.fingerprint, by_id=scripts.persistent(db_url)),
            f.reproduction))) if f.reproduction else f for f in self.findings)
        return replace(self, findings=saved)

    def raise_for_findings(self, fail_on: FailOn = "any", *, repro_dir: str | Path | None = None) -> None:
        """Raise :class:`FindingsFound` when the run found a confirmed failure, :class:`BlindRun` when it could not
        see, :class:`UntestedRun` when it tested nothing, :class:`IncompleteRun` when an oracle tested less than asked;
        return None when the model is clean. The message lists the failures by root cause, a few lines each, with the
        path of each one's reproduction script (saved in ``repro_dir``: see :meth:`save_scripts`), never the script."""
        __tracebackhide__ = True  # pytest shows the findings, not this frame
        if self.failing(fail_on):
            saved = self if all(f.script_path for f in self.failing(fail_on)) else self.save_scripts(repro_dir)
            failing = saved.failing(fail_on)
            causes = saved.root_causes(fail_on)
            lines = [f"fuzzkv found {len(failing)} KV-cache failure(s) in {self.model}, "
                     f"{len(causes)} root cause{'s' if len(causes) != 1 else ''}:"]
            for number, members in enumerate(causes, 1):
                first = members[0]
                oracles = rootcause.oracles_of(members, lambda f: f.oracle)
                lines.append(f"root cause {number}: seen by {len(oracles)} oracle(s): {', '.join(oracles)}")
                lines.append("  " + first.report().replace("\n", "\n  "))
                others = [f.script_path for f in members[1:] if f.script_path]
                if others:
                    lines.append(f"    the other oracles' scripts: {', '.join(others)}")
            raise FindingsFound("\n".join(lines), saved, failing)
        if self.untested:
            reasons = "; ".join(f"{k}: {v}" for k, v in {**self.unsupported, **self.not_applicable}.items())
            raise UntestedRun(f"fuzzkv tested nothing on {self.model}: {reasons or 'no oracle ran'}", self)
        if self.blind:
            why = "; ".join(f"{lane}: {reason}" for lane, reason in self.blind.items())
            raise BlindRun(f"fuzzkv could not see on {self.model} (nothing failed, but this proves nothing): {why}",
                           self)
        if self.incomplete:
            why = "; ".join(f"{key}: {reason}" for key, reason in self.incomplete.items())
            raise IncompleteRun(f"fuzzkv tested less than asked on {self.model} (nothing failed, not clean): {why}",
                                self)


def fuzz(model: object, *, oracles: str | Iterable[str] = (), backend: str = "hf", max_examples: int = 50,
         seed: int = 0, tolerance: float | None = None, db: str | None = None, scale: str = "full",
         dtype: str = "float32", device: str = "cpu", attn: str = "eager", max_time: float | None = None,
         deadline: float | None = DEFAULT_DEADLINE, max_batch: int = 4, max_prompt_len: int | None = None,
         max_new_tokens: int | None = None, init_std: float = 0.2, weights_seed: int = 0, workers: int = 1,
         trust_remote_code: bool = False, on_event: EventSink | None = None) -> Result:
    """Fuzz ``model``'s KV cache: each oracle's Hypothesis search, every failure shrunk to its minimal case.

    ``model``: a name as ``fuzzkv run --model`` takes it (a registry name, a model type, a directory, a
    ``module:factory``), a built ``PreTrainedModel``, or a zero-argument factory returning one. A module-level
    factory is recorded by its import name, so stored failures can be replayed; an object cannot be rebuilt by
    name, so its reproduction scripts load a copy fuzzkv saves (once, on the first failure) in a temporary folder.

    ``db``: the store URL (``sqlite:///fuzzkv.db``, ``postgresql://...``) where failures, tolerance baselines and
    Hypothesis' examples are kept between runs; None keeps them in memory for this call. The other keywords are
    ``fuzzkv run``'s options of the same names (``scale``, ``max_examples``... see ``fuzzkv run --help``);
    ``on_event`` receives every event of the run (``fuzzkv.events``), as reporters do. ``trust_remote_code``
    (``--trust-remote-code``): a model folder that ships its own model code (its config.json's ``auto_map``) is
    loaded by running that code, with your permissions; without it such a folder is refused.

    Raises ``fuzzkv.errors.UsageError`` for bad input (the CLI's exit code 2); a failure of the model is never
    raised: it is in ``Result.findings`` (``Result.raise_for_findings()`` turns it into an ``AssertionError``).
    """
    name, given = _named(model)
    config = RunConfig(model=name, backend=backend, oracles=_oracle_names(oracles), scale=scale, dtype=dtype,
                       device=device, attn=attn, seed=seed, max_examples=max_examples, max_time=max_time,
                       db_url=db or "memory:", init_std=init_std, weights_seed=weights_seed, tolerance=tolerance,
                       max_batch=max_batch, max_prompt_len=max_prompt_len, max_new_tokens=max_new_tokens,
                       deadline=deadline, trust_remote_code=trust_remote_code)
    return run(config, given=given, workers=workers, on_event=on_event)


def run(config: RunConfig, *, given: object = None, workers: int = 1, on_event: EventSink | None = None) -> Result:
    """Fuzz as ``config`` says (what ``fuzzkv run`` does with the same settings). ``given``: a model object or
    factory used in place of the one ``config.model`` names; ``workers``: processes fuzzing the same model with
    seeds ``seed .. seed + workers - 1`` into one shared store (needs a named model and a database)."""
    check_url(config.db_url)
    collected = _Collector(on_event)
    if workers > 1:
        if given is not None:
            raise UsageError("workers > 1 needs a model each worker process can rebuild by name, not an object.",
                             tip="pass a module-level factory function, a registry name or a directory")
        from fuzzkv.workers import run_workers

        finished = run_workers(config, workers, collected)
        return collected.result(config.model, finished)
    started = time.monotonic()  # --max-time bounds the whole run: the model's build counts too
    from fuzzkv.backends.loader import load_lanes  # heavy: imports torch only when running
    from fuzzkv.runner import run as run_lanes
    from fuzzkv.search import stopping_on_ctrl_c

    collected(events.Preparing(f"building {config.model}" + ("" if given is None else " (the object given)")))
    lanes = load_lanes(config, given)  # bad model names fail here, before the store is created
    store = open_store(config.db_url)
    try:
        with stopping_on_ctrl_c():  # Ctrl-C stops the run at once, even where Python would drop it
            finished = run_lanes(config, store, collected, lanes=lanes, started=started)
    finally:
        store.close()
    return collected.result(lanes.info.name, finished)


def check(model: object, case: Case | Mapping[str, Any] | str, *, oracle: str = "decode", backend: str = "hf",
          tolerance: float | None = None, scale: str = "full", dtype: str = "float32", device: str = "cpu",
          attn: str = "eager", init_std: float = 0.2, weights_seed: int = 0,
          deadline: float | None = DEFAULT_DEADLINE, trust_remote_code: bool = False) -> Verdict:
    """Run one oracle on one case (a :class:`Case`, its dict or its JSON, e.g. a finding's minimal case) and
    return the :class:`~fuzzkv.verdict.Verdict`: ``verdict.failed`` is True on a mismatch or an error.

    The tolerance is calibrated for the model as a run calibrates it, unless ``tolerance`` is given. The oracle
    runs on the first lane of ``backend`` it applies to (``decode`` on ``hf``, ``cross`` on ``hf,tl``'s cross
    lane); a mismatch is re-checked in the higher precision, as in a run. ``trust_remote_code``: as :func:`fuzz`'s.
    """
    name, given = _named(model)
    minimal = _as_case(case)
    config = RunConfig(model=name, backend=backend, oracles=(oracle,), scale=scale, dtype=dtype, device=device,
                       attn=attn, db_url="memory:", init_std=init_std, weights_seed=weights_seed,
                       tolerance=tolerance, deadline=deadline, trust_remote_code=trust_remote_code)
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.db import MemoryStore
    from fuzzkv.oracles import ORACLES
    from fuzzkv.oracles.check import check_within
    from fuzzkv.runner import Run

    lanes = load_lanes(config, given)
    chosen = ORACLES[oracle]
    lane = next((name for name in lanes.lanes if chosen.runs_on(name)), None)
    if lane is None:
        raise UsageError(f"oracle {oracle} cannot run on {lanes.info.name} with backend {backend}: "
                         f"{'; '.join(lanes.unsupported.values()) or 'no lane it applies to was built'}.",
                         tip=f"the oracle runs on the {', '.join(chosen.lanes)} lane(s)")
    why_not = lanes.lanes[lane].capabilities.why_not(chosen.min_batch, chosen.needs)
    if why_not is not None:
        raise UsageError(f"oracle {oracle} does not apply to {lanes.info.name}: {why_not}.")
    bounds = Run(config, lanes, MemoryStore(), _ignore, canaries=False).tolerance(lane).bounds
    return check_within(chosen, lanes.lanes[lane], minimal, bounds, config.deadline)


def _ignore(event: object) -> None:
    """An event sink that keeps nothing (``check`` has no reporters)."""


def _named(model: object) -> tuple[str, object]:
    """``model`` as (the name a run records, the object to load in its place or None). A module-level function is
    recorded as ``module:name`` and loaded by that name, like ``--model module:name``."""
    if isinstance(model, str):
        return model, None
    label = _import_name(model)
    if label is not None:
        return label, None
    kind = type(model)
    return f"object {kind.__module__}.{kind.__qualname__}", model


def _import_name(factory: object) -> str | None:
    """``module:name`` when ``factory`` is a function importable under that name (so a replay can rebuild it)."""
    import importlib
    import inspect

    if not inspect.isfunction(factory):
        return None
    module_name, name = str(factory.__module__), str(factory.__qualname__)
    if module_name == "__main__" or "<" in name:
        return None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return f"{module_name}:{name}" if vars(module).get(name) is factory else None


def _oracle_names(oracles: str | Iterable[str]) -> tuple[str, ...]:
    return (oracles,) if isinstance(oracles, str) else tuple(oracles)


def _as_case(case: Case | Mapping[str, Any] | str) -> Case:
    if isinstance(case, Case):
        return case
    try:
        return Case.from_json(case) if isinstance(case, str) else Case.from_dict(dict(case))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"not a fuzzkv case: {exc}.", tip="pass a Case, or a finding's case.to_json()") from None


class _Collector:
    """Passes every event on, and keeps what a :class:`Result` is made of: the run as ``--json`` would print it,
    and the failures with their verdicts."""

    def __init__(self, forward: EventSink | None):
        self.forward = forward
        self.report = JsonReporter(io.StringIO())
        self.found: list[events.FailureFound] = []

    def __call__(self, event: object) -> None:
        self.report(event)
        if isinstance(event, events.FailureFound):
            self.found.append(event)
        if self.forward is not None:
            self.forward(event)

    def result(self, model: str, finished: events.RunFinished) -> Result:
        data = json.loads(json.dumps(self.report.data, default=str))
        findings = tuple(Finding(e.verdict, e.lane, e.reproduction, e.diagnosis, e.fingerprint, e.stored_id,
                                 e.novelty, e.status, failure_json(e)) for e in self.found)
        return Result(model, findings, finished.examples, dict(finished.blind), finished.untested,
                      finished.interrupted, data.get("not_applicable", {}), data.get("unsupported", {}),
                      finished.run_id, data, dict(finished.incomplete))
