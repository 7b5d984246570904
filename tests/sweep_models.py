"""Architectures that misbehave in ways a long sweep must survive (``tests.sweep_models:NAME`` factories)."""

from __future__ import annotations

import os
import signal
import time


def crashes_the_interpreter():
    """A native crash (a segfault in a kernel, say): the process dies without a Python exception."""
    os.kill(os.getpid(), signal.SIGSEGV)


def hangs_while_loading():
    """Never returns (a deadlock in a model's construction)."""
    while True:
        time.sleep(0.5)
