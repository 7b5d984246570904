"""Where a sweep's architectures are fuzzed: one interface, one file per implementation.

An executor takes a :class:`~fuzzkv.sweep.SweepConfig` and calls back with one worker result per
model (see :mod:`fuzzkv.executors.worker` for its shape). Each model is fuzzed in a process of its
own, so a crash, a hang or a leak in one architecture cannot stop the sweep.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from fuzzkv.sweep import SweepConfig

Collect = Callable[[dict[str, Any]], None]


class Executor(ABC):
    """Runs one worker per model of a sweep; results come back through ``collect``, in any order."""

    name: str

    @abstractmethod
    def __call__(self, config: SweepConfig, collect: Collect) -> None:
        """Fuzz every model of ``config``; call ``collect(result)`` once per model."""
