"""What each CLI command does, apart from parsing: the CLI calls these and exits with their code."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fuzzkv import registry
from fuzzkv.config import RunConfig
from fuzzkv.db import check_url, open_store
from fuzzkv.errors import EXIT_FAILURES, EXIT_OK
from fuzzkv.reports.console import ConsoleReporter
from fuzzkv.reports.json_report import JsonReporter


def _keep_hypothesis_files_out_of_cwd() -> None:
    # Hypothesis caches files under ./.hypothesis by default; a CLI run should not litter
    # the user's working directory, so use the user's cache unless they chose a place.
    if "HYPOTHESIS_STORAGE_DIRECTORY" in os.environ:
        return
    from hypothesis.configuration import set_hypothesis_home_dir

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    set_hypothesis_home_dir(cache / "fuzzkv" / "hypothesis")


def run_command(config: RunConfig, *, as_json: bool = False, stream=None) -> int:
    """``fuzzkv run``: fuzz, store, report. Returns the exit code (0 clean, 1 failures)."""
    _keep_hypothesis_files_out_of_cwd()
    from fuzzkv.backends import load_backend  # heavy: imports torch only when running
    from fuzzkv.runner import run

    stream = stream or sys.stdout
    check_url(config.db_url)
    backend = load_backend(config)  # bad model names fail here, before the store is created
    store = open_store(config.db_url)
    reporter = JsonReporter(stream) if as_json else ConsoleReporter(stream)
    try:
        finished = run(config, store, reporter, backend=backend)
    finally:
        store.close()
    return EXIT_FAILURES if finished.failures else EXIT_OK


def models_table() -> str:
    """``fuzzkv models``: the registry with architecture, size and cache features."""
    rows = [("name", "architecture", "size", "cache features", "hub id")]
    for name in registry.names():
        spec = registry.get(name)
        rows.append((name, spec.architecture, spec.params, ", ".join(spec.features) or "-", spec.hub_id))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)
