"""The unit tier (``pytest -m unit``, or ``pytest tests/unit``): fuzzkv's own machinery (runner, search and
shrinking, store, replay, reports, fault handling) driven in one process through the fake backend
(tests/fake_backend.py), in seconds. No test here builds a model or starts a process: the fixture below fails a
test that does either, so the tier stays fast."""

from __future__ import annotations

import multiprocessing.process
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from fuzzkv.backends.interface import Lanes
from fuzzkv.config import RunConfig
from fuzzkv.db import MemoryStore, Store
from fuzzkv.events import RunFinished
from fuzzkv.runner import run
from tests.conftest import Recorder
from tests.fake_backend import fake_in_catalogue, fake_lanes

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by marker (-m unit)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def unit_tier() -> Iterator[None]:
    """The fake joins the core oracles' lanes; building a torch module (every transformers model is one),
    starting a process or importing transformers fails the test."""

    def refuse(what: str) -> Callable[..., None]:
        def refused(*_args: object, **_kwargs: object) -> None:
            raise AssertionError(f"a unit-tier test {what}: the tier runs in one process, without models")
        return refused

    had_transformers = "transformers" in sys.modules  # already imported by another test of the same session
    with pytest.MonkeyPatch.context() as patch, fake_in_catalogue():
        patch.setattr(subprocess.Popen, "__init__", refuse("started a subprocess"))
        patch.setattr(multiprocessing.process.BaseProcess, "start", refuse("started a process"))
        patch.setattr(torch.nn.Module, "__init__", refuse("built a torch module (a model)"))
        yield
    assert had_transformers or "transformers" not in sys.modules, "a unit-tier test imported transformers"


def fuzz_fake(*bugs: str, store: Store | None = None, lanes: Lanes | None = None,
              emit: Callable[[object], None] | None = None, started: float | None = None,
              **options: object) -> tuple[RunFinished, Recorder, Store]:
    """Run fuzzkv in-process on the fake backend with ``bugs`` planted (or on ``lanes``); ``emit`` sees every
    event too; ``started``: when the run began, as the API passes it (before the model's build). Returns
    (RunFinished, the events, the store)."""
    options.setdefault("max_examples", 30)
    options.setdefault("db_url", "memory:")
    config = RunConfig(model="fake", **options)  # type: ignore[arg-type]
    store, recorder = store or MemoryStore(), Recorder()

    def record(event: object) -> None:
        recorder.append(event)
        if emit is not None:
            emit(event)

    return run(config, store, record, lanes or fake_lanes(*bugs), started=started), recorder, store
