"""What each CLI command does, apart from parsing: the CLI calls these and exits with their code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fuzzkv import registry
from fuzzkv.config import RunConfig
from fuzzkv.db import STATUSES, check_url, open_store
from fuzzkv.errors import EXIT_FAILURES, EXIT_OK, UsageError
from fuzzkv.reports import failures as failure_views
from fuzzkv.reports.console import ConsoleReporter, ReplayConsoleReporter
from fuzzkv.reports.json_report import JsonReporter, ReplayJsonReporter


def _keep_hypothesis_files_out_of_cwd() -> None:
    # Hypothesis caches files under ./.hypothesis by default; a CLI run should not litter
    # the user's working directory, so use the user's cache unless they chose a place.
    if "HYPOTHESIS_STORAGE_DIRECTORY" in os.environ:
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    set_hypothesis_home_dir(cache / "fuzzkv" / "hypothesis")


def _fan_out(*reporters):
    """One event sink feeding several reporters."""
    def emit(event):
        for reporter in reporters:
            reporter(event)
    return emit


def run_command(config: RunConfig, *, as_json: bool = False, junit: str | None = None, stream=None) -> int:
    """``fuzzkv run``: fuzz, store, report. Returns the exit code (0 clean, 1 failures)."""
    _keep_hypothesis_files_out_of_cwd()
    from fuzzkv.backends import load_lanes  # heavy: imports torch only when running
    from fuzzkv.runner import run

    stream = stream or sys.stdout
    check_url(config.db_url)
    lanes = load_lanes(config)  # bad model names fail here, before the store is created
    store = open_store(config.db_url)
    reporter = JsonReporter(stream) if as_json else ConsoleReporter(stream)
    if junit:
        from fuzzkv.reports.junit import JunitReporter

        reporter = _fan_out(reporter, JunitReporter(junit))
    try:
        finished = run(config, store, reporter, lanes=lanes)
    finally:
        store.close()
    return EXIT_FAILURES if finished.failures else EXIT_OK


def failures_command(db_url: str, *, model: str | None, status: str, as_json: bool) -> int:
    """``fuzzkv failures``: the stored failures as a table or JSON."""
    store = open_store(db_url, create=False)
    try:
        records = store.failures(model=model, status=None if status == "all" else status)
    finally:
        store.close()
    if as_json:
        print(json.dumps([failure_views.record_json(r) for r in records], indent=2, default=str))
    else:
        print(failure_views.table(records))
    return EXIT_OK


def show_command(db_url: str, failure_id: int, *, as_json: bool) -> int:
    """``fuzzkv show ID``: one whole record and its reproduction script."""
    store = open_store(db_url, create=False)
    try:
        record = store.failure(failure_id)
    finally:
        store.close()
    if record is None:
        raise UsageError(f"no stored failure with id {failure_id}.", tip="'fuzzkv failures --status all' lists them")
    print(json.dumps(failure_views.record_json(record), indent=2, default=str) if as_json
          else failure_views.show(record))
    return EXIT_OK


def replay_command(db_url: str, *, model: str | None, as_json: bool) -> int:
    """``fuzzkv replay``: exit 1 when any stored failure still fails."""
    from fuzzkv.replay import replay

    store = open_store(db_url, create=False)
    try:
        finished = replay(store, ReplayJsonReporter() if as_json else ReplayConsoleReporter(), model=model)
    finally:
        store.close()
    return EXIT_FAILURES if finished.failing else EXIT_OK


def calibrate_command(config: RunConfig) -> int:
    """``fuzzkv calibrate``: measure and store a tolerance baseline; exit 1 if noise regressed."""
    from fuzzkv import baselines
    from fuzzkv.backends import load_lanes
    from fuzzkv.runner import library_versions

    check_url(config.db_url)
    lanes = load_lanes(config)
    backend = lanes.backends.get(config.backend)
    if backend is None:
        raise UsageError(f"backend {config.backend} cannot calibrate {config.model}: "
                         f"{lanes.unsupported.get(config.backend, 'use --backend hf or tl')}.")
    store = open_store(config.db_url)
    try:
        tolerance, growth = baselines.measure(config, backend, store, library_versions())
    finally:
        store.close()
    print(f"{backend.info.name} ({config.scale}, {config.dtype}, {config.device}, attention {config.attn}): "
          f"tolerance {tolerance.value:.3g}")
    print(f"  {tolerance.source}")
    if growth:
        print(f"  REGRESSION: {growth.message()}")
        return EXIT_FAILURES
    return EXIT_OK


def models_table() -> str:
    """``fuzzkv models``: the registry with architecture, size and cache features."""
    rows = [("name", "architecture", "size", "cache features", "hub id")]
    for name in registry.names():
        spec = registry.get(name)
        rows.append((name, spec.architecture, spec.params, ", ".join(spec.features) or "-", spec.hub_id))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


STATUS_CHOICES = (*STATUSES, "all")
