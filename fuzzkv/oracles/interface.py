"""What an oracle is: one registered object holding everything fuzzkv needs to run, calibrate and reproduce it.

An :class:`Oracle` is declared once, in its own module, and registered (fuzzkv's own in
:mod:`fuzzkv.oracles`, anyone else's through the ``fuzzkv.oracles`` entry point group): its strategy, its
comparisons, the lanes it runs on and the backend features it needs, how a calibration case is fitted to it,
and the body of its reproduction script. Shared code never names an oracle.

This module and the oracles' own modules import no torch (the CLI lists and validates oracles without a
model): comparisons work on the traces backends return, through their methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from hypothesis.strategies import SearchStrategy

from fuzzkv.backends.interface import PathError, uncached
from fuzzkv.case import Case

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, Trace
    from fuzzkv.strategies import CaseSpace
    from fuzzkv.verdict import Bounds

S = TypeVar("S")  # what an oracle's comparisons receive: a Backend, or a Pair for a cross lane
T = TypeVar("T")


class Comparison(NamedTuple):
    """Two traces that must agree, under a label that says which paths they came from."""

    label: str
    reference: Trace
    candidate: Trace
    # Its own bounds where the paths legitimately differ by more than rounding (a lossy quantized cache, whose
    # noise is calibrated per setting); None: the run's tolerance.
    bounds: Bounds | None = None


@dataclass(frozen=True)
class Oracle(Generic[S]):
    """A named property a KV cache must keep, as paths that must agree.

    ``lanes``: the lanes it runs on, as names or patterns ("hf", "torchtune", "cross*" for every cross lane).
    ``script``: the lines a reproduction script runs on ``subject`` (the model, or an adapter over another
    library's model) after the embedded path code; the backend's script builder fills ``{attentions}`` (the
    model's other attention implementations), ``{generate}`` (the library's generate call), ``{hf}`` and ``{name}``
    (a cross script's HF path prefix and the other library's name)."""

    name: str
    description: str
    strategy: Callable[[CaseSpace], SearchStrategy[Case]]
    comparisons: Callable[[S, Case], list[Comparison]]
    script: str
    lanes: tuple[str, ...] = ("hf",)
    min_batch: int = 1  # a backend that runs smaller batches only cannot run this oracle
    needs: frozenset[str] = frozenset()  # backend features required (e.g. "static-cache")
    # In the default set (no --oracle). A new surface's oracle is opt-in until 100 clean examples on every
    # registry model have shown it raises no false alarm (docs/reference/oracles.md).
    default: bool = True
    # Devices (torch device types) on which an opt-in oracle is in the default set all the same: where it costs
    # what the others do (compiling on a CPU takes 10-40 s per model).
    default_on: tuple[str, ...] = ()
    # How a calibration case is shaped into one this oracle's strategy could draw (None: not one it accepts);
    # no fit: calibration has no cases of its own for it, and it is held to the spread of the others.
    fit: Callable[[Case], Case | None] | None = None
    # Lines a script sets before its body, from the case (e.g. whether fuzzkv held a property in float64).
    script_setup: Callable[[Case], str] | None = None

    def is_default(self, device: str) -> bool:
        """Whether this oracle runs without --oracle on ``device`` ("cpu", "cuda", "cuda:1", ...)."""
        return self.default or device.split(":")[0] in self.default_on

    def runs_on(self, lane: str) -> bool:
        """Whether this oracle applies to the lane named ``lane``."""
        return any(fnmatchcase(lane, pattern) for pattern in self.lanes)

    def script_for(self, case: Case) -> str:
        """The body of this oracle's reproduction script for ``case``."""
        setup = self.script_setup(case) if self.script_setup is not None else ""
        return setup + self.script


# Helpers oracles write their comparisons with.

def run_path(path: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call one path; any exception becomes a :class:`PathError` naming the path."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a model's exception is a finding, not our crash
        raise PathError(path, exc) from exc


def teacher_forced(backend: Backend, trace: Trace, path: str = "uncached reference") -> Trace:
    """The uncached reference for ``trace``'s final sequence: one forward pass."""
    logits = run_path(path, uncached, backend, trace.tokens, trace.attention_mask, trace.encoder)
    return trace.everywhere(trace.tokens, trace.attention_mask, logits, trace.encoder)


def against_uncached(backend: Backend, path: str, produce: Callable[[Case], Trace], case: Case) -> tuple[Trace, Trace]:
    """A path that chooses its own tokens (generate() and its variants) against one uncached forward over them:
    teacher-forcing checks every step's logits, where a second run without a cache could flip on near-ties."""
    produced = run_path(path, produce, case)
    return teacher_forced(backend, produced), produced


def single(label: str, pair: Callable[[S, Case], tuple[Trace, Trace]]) -> Callable[[S, Case], list[Comparison]]:
    """An oracle with one comparison."""
    return lambda subject, case: [Comparison(label, *pair(subject, case))]
