"""``fuzzkv run --workers N``: N processes fuzz one model with different seeds into one store.

Each worker is a separate process with its own copy of the model (torch releases no GIL
worth sharing, and a crashed worker must not take the others down). Worker ``i`` runs
the same configuration with seed ``seed + i``. Failures meet in the shared database,
where the unique fingerprint keeps one row per failure; the parent merges the workers'
events into one stream, so reporters see one run: one start, one line per oracle, each
failure once.

Worker 0 starts alone and the rest start once it has settled the tolerance, so a model
is calibrated once (the others find the stored baseline) and a bad model name or
database fails once, as the usual one-line error.
"""

from __future__ import annotations

import multiprocessing
import queue as queues
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from fuzzkv import events
from fuzzkv.config import RunConfig, backends_of, threads_per_worker
from fuzzkv.errors import FuzzkvError, UsageError


@dataclass(frozen=True)
class WorkerStopped:
    """A worker's last message: how it ended."""

    worker: int
    error: BaseException | None = None


def _work(config: RunConfig, worker: int, threads: int, outbox) -> None:
    """One worker process: load the model, run, send every event to the parent."""
    import torch

    torch.set_num_threads(threads)
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.db import open_store
    from fuzzkv.runner import run
    from fuzzkv.search import stopping_on_ctrl_c

    error: BaseException | None = None
    try:
        # Ctrl-C reaches every worker of the terminal's process group: each stops at its next example.
        with stopping_on_ctrl_c():
            lanes = load_lanes(config)
            store = open_store(config.db_url)
            try:
                run(config, store, outbox.put, lanes)
            finally:
                store.close()
    except KeyboardInterrupt:
        error = KeyboardInterrupt()
    except FuzzkvError as exc:
        error = exc
    except Exception as exc:  # noqa: BLE001 - reported by the parent as this worker's internal error
        error = RuntimeError(f"worker {worker}: {type(exc).__name__}: {exc}")
    outbox.put(WorkerStopped(worker, error))


@dataclass
class Block:
    """One oracle's events from every worker, shown together once all have finished it."""

    started: events.OracleStarted
    failures: list = field(default_factory=list)
    finished: list = field(default_factory=list)


@dataclass
class Merger:
    """Turns N workers' event streams into one run's events: one start, each tolerance once,
    each oracle once (after every worker finished it, with summed examples), each failure once."""

    workers: int
    emit: Callable[[object], None]
    started: bool = False
    said: set = field(default_factory=set)  # tolerance lanes and unsupported lanes already shown
    blocks: dict = field(default_factory=dict)  # (oracle, lane) -> Block, in the order first started
    fingerprints: set = field(default_factory=set)
    failures: list = field(default_factory=list)
    runs: list = field(default_factory=list)

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            handler(event)

    def _on_RunStarted(self, event) -> None:
        if not self.started:
            self.started = True
            self.emit(event)

    def _once(self, key, event) -> None:
        if key not in self.said:
            self.said.add(key)
            self.emit(event)

    def _on_ToleranceChosen(self, event) -> None:
        self._once(event.lane, event)

    def _on_CanariesChecked(self, event: events.CanariesChecked) -> None:
        self._once(("canaries", event.lane), event)

    def _on_BackendUnsupported(self, event) -> None:
        self._once(("unsupported", event.lane), event)

    def _on_OracleSkipped(self, event: events.OracleSkipped) -> None:
        self._once(("skipped", event.oracle, event.lane), event)

    def _on_OracleStarted(self, event) -> None:
        self.blocks.setdefault((event.oracle, event.lane), Block(event))

    def _on_FailureFound(self, event) -> None:
        self.blocks[(event.verdict.oracle, event.lane)].failures.append(event)

    def _on_OracleFinished(self, event) -> None:
        self.blocks[(event.oracle, event.lane)].finished.append(event)
        self._flush()

    def _on_RunFinished(self, event) -> None:
        self.runs.append(event)

    def _flush(self) -> None:
        """Show finished blocks in the order the oracles run, stopping at the first unfinished one."""
        for key, block in list(self.blocks.items()):
            if len(block.finished) < self.workers:
                return
            self.emit(block.started)
            shown = 0
            # A worker that started after another stored a failure sees it as known: the news wins.
            for found in sorted(block.failures, key=lambda f: not f.is_news):
                if found.fingerprint not in self.fingerprints:
                    self.fingerprints.add(found.fingerprint)
                    self.failures.append(found)
                    self.emit(found)
                    shown += 1
            self.emit(_merged(block.finished, shown))
            del self.blocks[key]

    def finished(self, interrupted: bool = False) -> events.RunFinished:
        return events.RunFinished(sum(r.examples for r in self.runs), list(self.failures),
                                  max((r.elapsed for r in self.runs), default=0.0),
                                  self.runs[0].run_id if self.runs else None,
                                  interrupted or any(r.interrupted for r in self.runs),
                                  tuple(i for r in self.runs for i in r.shrinking),
                                  next((r.error for r in self.runs if r.error), None),
                                  {lane: why for r in self.runs for lane, why in r.blind.items()},
                                  # each worker was asked for the same examples: one that tested less is said
                                  {key: why for r in self.runs for key, why in r.incomplete.items()})


def _merged(done: list, failures: int) -> events.OracleFinished:
    first = [d.first_failure_at for d in done if d.first_failure_at is not None]
    return replace(done[0], examples=sum(d.examples for d in done), failures=failures,
                   elapsed=max(d.elapsed for d in done), stopped_by_time=any(d.stopped_by_time for d in done),
                   first_failure_at=min(first) if first else None,
                   incomplete=next((d.incomplete for d in done if d.incomplete), None))


def run_workers(config: RunConfig, workers: int, emit) -> events.RunFinished:
    """Run ``config`` in ``workers`` processes (seeds ``seed`` .. ``seed + workers - 1``); one merged run."""
    if config.db_url == "memory:":
        raise UsageError("--workers needs a database the workers can share, not memory:.",
                         tip="use --db sqlite:///fuzzkv.db or a postgresql:// URL")
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
    outbox = context.Queue()
    threads = threads_per_worker(workers)
    processes = [context.Process(target=_work, args=(replace(config, seed=config.seed + i), i, threads, outbox),
                                 daemon=True) for i in range(workers)]
    merger = Merger(workers, emit)
    interrupted = False
    try:
        _drive(processes, outbox, merger, config)
    except KeyboardInterrupt:
        # Ctrl-C reaches every worker too: each stores what it has and ends its run. Collect
        # their last events for the summary, for a few seconds at most.
        interrupted = True
        _drain(processes, outbox, merger, seconds=10.0)
    finally:
        for process in (p for p in processes if p.pid is not None):  # started ones only
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)
    finished = merger.finished(interrupted)
    emit(finished)
    return finished


def _drain(processes, outbox, merger: Merger, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    started = sum(1 for p in processes if p.pid is not None)
    stopped = 0
    while stopped < started and time.monotonic() < deadline:
        try:
            message = outbox.get(timeout=0.5)
        except (queues.Empty, KeyboardInterrupt):
            continue
        if isinstance(message, WorkerStopped):
            stopped += 1
        elif isinstance(message, events.RunFinished):
            merger(message)


def _drive(processes, outbox, merger: Merger, config: RunConfig) -> None:
    lanes_to_settle = len(backends_of(config.backend))  # one tolerance per backend (a cross lane sums two)
    processes[0].start()
    waiting, stopped = list(processes[1:]), 0
    while stopped < len(processes):
        try:
            message = outbox.get(timeout=1.0)
        except queues.Empty:
            if not any(p.is_alive() for p in processes if p.pid is not None) and outbox.empty():
                raise RuntimeError("every worker exited without saying why (killed?)") from None
            continue
        if isinstance(message, WorkerStopped):
            stopped += 1
            _raise_for(message)
            _start(waiting)  # worker 0 ended before settling a tolerance: the rest still run
            continue
        merger(message)
        if waiting and len(merger.said) >= lanes_to_settle:
            _start(waiting)


def _start(waiting: list) -> None:
    for process in waiting:
        process.start()
    waiting.clear()


def _raise_for(message: WorkerStopped) -> None:
    if message.error is not None:
        raise message.error
