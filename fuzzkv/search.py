"""One oracle's Hypothesis search: generate, target, shrink; bounded by examples and time.

The test body checks a case with the oracle and raises when it fails, so Hypothesis
shrinks it. Each failing verdict is handed to ``on_failure`` at once, so the store holds
the smallest case found so far even if the process is killed mid-shrink.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hypothesis import HealthCheck, Phase, Verbosity, given, reject, seed, settings, target
from hypothesis.database import ExampleDatabase
from hypothesis.errors import Unsatisfiable

from fuzzkv.backends.interface import Lane
from fuzzkv.case import Case
from fuzzkv.oracles import Oracle
from fuzzkv.oracles.check import AFTER_HANG_FLOOR, HangClock, check_within
from fuzzkv.strategies import CaseSpace
from fuzzkv.verdict import Bounds, Verdict

# Set when this process was asked to stop (Ctrl-C): the next example raises KeyboardInterrupt. A signal
# handler's own KeyboardInterrupt can land in a garbage-collector callback, where Python prints it and drops it.
STOP_REQUESTED = threading.Event()


@contextmanager
def stopping_on_ctrl_c() -> Iterator[None]:
    """Within the block, Ctrl-C (SIGINT) raises KeyboardInterrupt as usual and is also remembered: where the
    KeyboardInterrupt lands in a callback Python cannot raise from (the garbage collector's), Python drops it, and
    the run would go on to its --max-time; remembered, the search stops at its next example, and the dropped one
    prints nothing. Outside the main thread (where no signal handler can be set) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    STOP_REQUESTED.clear()

    def on_ctrl_c(_signum: int, _frame: object) -> None:
        STOP_REQUESTED.set()
        raise KeyboardInterrupt()

    def quiet_when_stopping(unraisable: sys.UnraisableHookArgs) -> None:
        if not (STOP_REQUESTED.is_set() and isinstance(unraisable.exc_value, KeyboardInterrupt)):
            previous_hook(unraisable)

    previous_handler, previous_hook = signal.signal(signal.SIGINT, on_ctrl_c), sys.unraisablehook
    sys.unraisablehook = quiet_when_stopping
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        sys.unraisablehook = previous_hook


class OutOfTime(KeyboardInterrupt):
    """Stops a search at --max-time.

    A KeyboardInterrupt, because that is the one exception Hypothesis neither treats as a
    failure nor saves: any other BaseException would put the example in progress into the
    failure corpus, and the next night would replay it as an already-shrunk failure.
    """


class CaseFailed(Exception):
    """Raised inside the Hypothesis test so it shrinks; carries the verdict."""

    def __init__(self, verdict: Verdict):
        super().__init__(verdict.summary())
        self.verdict = verdict


_FAILURE_TYPES: dict[tuple, type] = {}


def failure_key(verdict: Verdict) -> tuple:
    """What makes two failures distinct bugs: the oracle, the kind, and the exception type."""
    return (verdict.oracle, verdict.kind, verdict.error_type)


def failure_type(verdict: Verdict) -> type:
    """One exception class per failure key: Hypothesis keeps distinct bugs apart by type."""
    key = failure_key(verdict)
    if key not in _FAILURE_TYPES:
        name = "".join(part.title() for part in f"{verdict.oracle}-{verdict.kind}".split("-"))
        _FAILURE_TYPES[key] = type(f"{name}{verdict.error_type or ''}", (CaseFailed,), {})
    return _FAILURE_TYPES[key]


class EnoughExamples(KeyboardInterrupt):
    """Stops a search that has checked as many distinct cases as asked (a KeyboardInterrupt for the reason
    :class:`OutOfTime` is one)."""


def draws_for(examples: int) -> int:
    """The draws Hypothesis is asked for to check ``examples`` distinct cases: half as many more (at least 2), as some
    draws repeat a case through other choices (checked once, counted once: the full-size bloom-560m's cache-reuse
    search met 4 repeats in 22 draws). Not more: Hypothesis starts its targeting pass halfway through its draws, and
    a search stopped at its distinct cases must have reached it (at 3/4 of them here)."""
    return examples + max(2, examples // 2)


class Search:
    """The Hypothesis search for one oracle."""

    def __init__(self, oracle: Oracle, lane: Lane, bounds: Bounds, *, budget: float | None,
                 on_example: Callable[[int, float], None], on_failure: Callable[[Verdict], None],
                 deadline: float | None = None, hang_floor: float = AFTER_HANG_FLOOR):
        self.oracle, self.lane, self.bounds, self.budget = oracle, lane, bounds, budget
        # Once a case hangs, the shrinker's smaller tries get a shorter deadline (see HangClock).
        self.clock = HangClock(deadline, hang_floor)
        self.on_example, self.on_failure = on_example, on_failure
        self.examples, self.elapsed, self.stopped_by_time = 0, 0.0, False
        self.started = time.monotonic()
        self.seen: dict[Case, Verdict] = {}
        self.asked: int | None = None  # distinct cases to check (execute's max_examples)
        self.failing = False
        self.first_failure_at: int | None = None  # examples run when the first failure appeared

    def check(self, case: Case) -> None:
        """The Hypothesis test body: check one case, raise if it fails."""
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt()
        verdict = self.seen.get(case)
        if verdict is None:
            if not self.failing and self.asked is not None and self.examples >= self.asked:
                raise EnoughExamples()
            if self._out_of_time():
                if not self.failing:
                    raise OutOfTime()  # nothing found yet: stop the search outright
                return  # shrinking past its time: new candidates pass, known failures still replay
            verdict = self._fresh(case)
        if verdict.kind == "refused":
            reject()  # the library documents it does not run this case: neither a pass nor a finding
        if verdict.metrics is not None:
            target(verdict.score, label=self.oracle.name)
        if verdict.failed:
            raise failure_type(verdict)(verdict)

    def _fresh(self, case: Case) -> Verdict:
        began = time.monotonic()
        verdict = check_within(self.oracle, self.lane, case, self.bounds, *self.clock.next())
        self.clock.finished(None if verdict.error_type == "Deadline" else time.monotonic() - began)
        self.seen[case] = verdict
        if verdict.kind == "refused":  # the library did not run it (or ran something else): nothing was tested
            return verdict
        self.examples += 1
        self.on_example(self.examples, time.monotonic() - self.started)
        if verdict.failed:
            if not self.failing:
                self.failing, self.first_failure_at = True, self.examples
            self.on_failure(verdict)
        return verdict

    def _out_of_time(self) -> bool:
        if self.budget is None:
            return False
        # Shrinking a found failure may take up to twice the budget more: a minimal case is worth it.
        limit = self.budget * (3 if self.failing else 1)
        if time.monotonic() - self.started > limit:
            self.stopped_by_time = True
            return True
        return False

    def execute(self, space: CaseSpace, *, max_examples: int, seed_value: int,
                database: ExampleDatabase | None) -> list[Verdict]:
        """Run the search over ``max_examples`` distinct cases (Hypothesis may draw a case twice through different
        choices: checked once, counted once); returns the shrunk verdicts of every distinct failure."""
        self.started, self.asked = time.monotonic(), max_examples
        phases = (Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink)
        test = settings(
            max_examples=draws_for(max_examples), deadline=None, database=database, verbosity=Verbosity.quiet,
            suppress_health_check=list(HealthCheck), report_multiple_bugs=True,
            phases=phases if database is not None else phases[:1] + phases[2:],
        )(seed(seed_value)(given(self.oracle.strategy(space))(self.check)))
        try:
            test()
            return []
        except (OutOfTime, EnoughExamples):
            return []
        except Unsatisfiable:  # every case drawn was refused: 0 examples, which the runner reports as incomplete
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
