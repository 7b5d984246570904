"""Shared fixtures: tiny models and in-memory runs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# Tests run in parallel workers on 2 cores: more than one intra-op thread per worker makes
# OpenMP threads spin against each other and a 5 ms forward takes 500 ms.
torch.set_num_threads(1)

from fuzzkv.config import RunConfig  # noqa: E402
from fuzzkv.db import MemoryStore  # noqa: E402


class Recorder(list):
    """An event sink that keeps every event, for assertions."""

    def of(self, kind):
        return [e for e in self if type(e).__name__ == kind]


def fuzz(model: str, **options):
    """Run fuzzkv in-process on an in-memory store; returns (RunFinished, events, store)."""
    from fuzzkv.runner import run

    options.setdefault("scale", "tiny")
    options.setdefault("max_examples", 30)
    config = RunConfig(model=model, db_url="memory:", **options)
    store, recorder = MemoryStore(), Recorder()
    finished = run(config, store, recorder.append)
    return finished, recorder, store


@pytest.fixture
def fuzz_run():
    return fuzz
