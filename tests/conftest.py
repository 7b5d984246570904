"""Shared fixtures: tiny models and in-memory runs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests run in parallel workers on 2 cores: more than one intra-op thread per worker makes OpenMP threads spin
# against each other and a 5 ms forward takes 500 ms. In the environment, so that the fuzzkv processes tests start
# (CLI runs, sweep workers, scripts) take one thread too: a 135M model's forward took 8.5 s with two threads beside
# a busy worker, 1.4 s with one.
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

torch.set_num_threads(1)

from fuzzkv.config import RunConfig  # noqa: E402
from fuzzkv.db import MemoryStore  # noqa: E402


class Recorder(list):
    """An event sink that keeps every event, for assertions."""

    def of(self, kind):
        return [e for e in self if type(e).__name__ == kind]


def fuzz(model: str, **options):
    """Run fuzzkv in-process on an in-memory store; returns (RunFinished, events, store)."""
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.runner import run

    options.setdefault("scale", "tiny")
    options.setdefault("max_examples", 30)
    config = RunConfig(model=model, db_url="memory:", **options)
    store, recorder = MemoryStore(), Recorder()
    finished = run(config, store, recorder.append, load_lanes(config))
    return finished, recorder, store


def assert_clean(model: str, oracles: tuple[str, ...], max_examples: int) -> None:
    """Fuzz ``model`` with ``oracles``: no failure, and each oracle ran at least ``max_examples`` examples (a clean
    run that tested nothing is not clean)."""
    from fuzzkv.events import OracleFinished

    finished, events, _ = fuzz(model, max_examples=max_examples, oracles=oracles)
    assert not finished.failures
    ran = {event.oracle: event.examples for event in events if isinstance(event, OracleFinished)}
    assert all(ran.get(oracle, 0) >= max_examples for oracle in oracles), ran


@pytest.fixture
def fuzz_run():
    return fuzz


# -- fault-injection accounting ----------------------------------------------------------
# Tests that inject a fault (a kill, a broken model, a full disk, a bad input) declare it
# with the ``fault`` fixture; the outcome of the test says whether fuzzkv survived it. The
# totals are printed at the end of the run so the project can quote them.
FAULT_LOG = "FUZZKV_FAULT_LOG"


def pytest_configure(config):
    if not os.environ.get(FAULT_LOG):  # the controller sets it; xdist workers inherit it
        import tempfile

        os.environ[FAULT_LOG] = os.path.join(tempfile.mkdtemp(prefix="fuzzkv-faults-"), "faults.jsonl")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.fault_survived = report.passed


@pytest.fixture
def fault(request):
    """``fault(kind, what)``: declare the fault this test injects (kind: kill, fault or bad input)."""
    declared = []
    yield lambda kind, what: declared.append((kind, what))
    import json

    survived = getattr(request.node, "fault_survived", False)
    with open(os.environ[FAULT_LOG], "a", encoding="utf-8") as log:
        for kind, what in declared:
            log.write(json.dumps({"kind": kind, "what": what, "survived": survived}) + "\n")


def pytest_terminal_summary(terminalreporter):
    import json

    path = os.environ.get(FAULT_LOG)
    if not path or not os.path.exists(path) or hasattr(terminalreporter.config, "workerinput"):
        return
    with open(path, encoding="utf-8") as log:
        entries = [json.loads(line) for line in log if line.strip()]
    if not entries:
        return
    terminalreporter.section("fault injection")
    for kind in sorted({e["kind"] for e in entries}):
        tried = [e for e in entries if e["kind"] == kind]
        survived = sum(e["survived"] for e in tried)
        terminalreporter.write_line(f"{kind:10s} tried {len(tried):3d}  survived {survived:3d}")
    lost = [e["what"] for e in entries if not e["survived"]]
    terminalreporter.write_line(f"{'total':10s} tried {len(entries):3d}  survived {len(entries) - len(lost):3d}"
                                + (f"  NOT survived: {'; '.join(lost)}" if lost else ""))
