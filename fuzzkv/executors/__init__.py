"""Where a sweep's architectures are fuzzed: one interface, one file per implementation.

An executor takes the sweep's tasks (:class:`~fuzzkv.sweep.Task`: an architecture with one sweep's settings) and
calls back with one worker result per task (see :mod:`fuzzkv.executors.worker` for its shape). Each task is
fuzzed in a process of its own, so a crash, a hang or a leak in one architecture cannot stop the sweep:
``local.py`` runs child interpreters on this machine, ``ray.py`` Ray tasks across a cluster.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fuzzkv.sweep import Collect, Task


class Executor(ABC):
    """Runs one worker per task of a sweep or campaign; results come back through ``collect``, in any order."""

    name: str

    @abstractmethod
    def __call__(self, tasks: list[Task], collect: Collect) -> None:
        """Fuzz every task; call ``collect(task, result)`` once per task."""
