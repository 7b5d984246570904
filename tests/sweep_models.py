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


def dies_on_its_first_attempt():
    """A clean tiny Llama whose first build waits to be killed (the test kills its worker process mid-task); a
    retry builds it normally. ``FUZZKV_TEST_ATTEMPTS`` names a directory: each attempt leaves its pid there."""
    from pathlib import Path

    from tests.broken_models import clean

    attempts = Path(os.environ["FUZZKV_TEST_ATTEMPTS"])
    attempts.mkdir(parents=True, exist_ok=True)
    first = not any(attempts.iterdir())
    (attempts / str(os.getpid())).touch()
    while first:  # the test kills this process; a retry finds the pid file and builds
        time.sleep(0.2)
    return clean()
