"""What each CLI command does, apart from parsing: the CLI calls these and exits with their code."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fuzzkv import registry
from fuzzkv.config import RunConfig
from fuzzkv.db import STATUSES, check_url, open_store
from fuzzkv.errors import EXIT_BLIND, EXIT_FAILURES, EXIT_OK, EXIT_UNTESTED, UsageError
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


FAIL_ON = ("any", "new")


@dataclass(frozen=True)
class RunOutputs:
    """What ``fuzzkv run`` writes besides the store, and what makes it exit 1."""

    as_json: bool = False
    junit: str | None = None
    report: str | None = None
    summary: str | None = None
    fail_on: str = "any"  # "new": only failures new to the store or re-opened after a fix
    workers: int = 1  # processes fuzzing the same model with seeds seed .. seed + workers - 1
    repro_dir: str | None = None  # where scripts are saved (None: fuzzkv.reports.scripts.default_folder)
    verbosity: int = 0  # -1 --quiet, 0, 1 --verbose


def run_command(config: RunConfig, outputs: RunOutputs = RunOutputs(), *, stream=None) -> int:
    """``fuzzkv run``: fuzz, store, report, through the public API (:func:`fuzzkv.api.run`). Returns the exit
    code (0 clean, 1 failures, 4 blind, 5 untested, 6 incomplete, 130 interrupted)."""
    _keep_hypothesis_files_out_of_cwd()
    from fuzzkv import api

    stream = stream or sys.stdout
    result = api.run(config, workers=outputs.workers, on_event=_run_reporters(outputs, stream))
    if outputs.report:
        store = open_store(config.db_url, create=False)
        try:
            _write_report(store, outputs.report, result.model, stream if not outputs.as_json else sys.stderr)
        finally:
            store.close()
    # A flaky finding is stored and shown, but it is not a confirmed failure.
    return result.exit_code("new" if outputs.fail_on == "new" else "any")


def _run_reporters(outputs: RunOutputs, stream):
    console = ConsoleReporter(stream, verbosity=outputs.verbosity, repro_dir=outputs.repro_dir)
    reporters: list[Callable[[object], None]] = [JsonReporter(stream) if outputs.as_json else console]
    if outputs.junit:
        from fuzzkv.reports.junit import JunitReporter

        reporters.append(JunitReporter(outputs.junit, outputs.repro_dir))
    if outputs.summary:
        from fuzzkv.reports.summary import SummaryReporter

        reporters.append(SummaryReporter(outputs.summary, outputs.repro_dir))
    return _fan_out(*reporters)


def _write_report(store, out: str, model: str | None, stream, run_id: int | None = None) -> None:
    from fuzzkv.reports.html import write_report

    path = write_report(store, out, model=model, run_id=run_id)
    stream.write(f"HTML report: {path}\n")
    stream.flush()


def report_command(db_url: str, out: str, *, model: str | None, run_id: int | None) -> int:
    """``fuzzkv report``: the stored failures and runs as one self-contained HTML file."""
    store = open_store(db_url, create=False)
    try:
        _write_report(store, out, model, sys.stdout, run_id)
    finally:
        store.close()
    return EXIT_OK


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


def show_command(db_url: str, failure_id: int, *, as_json: bool, script_only: bool = False) -> int:
    """``fuzzkv show ID``: one whole record and its reproduction script (``--script``: the script alone)."""
    store = open_store(db_url, create=False)
    try:
        record = store.failure(failure_id)
    finally:
        store.close()
    if record is None:
        raise UsageError(f"no stored failure with id {failure_id}.", tip="'fuzzkv failures --status all' lists them")
    if script_only:
        print(record.reproduction.rstrip())
        return EXIT_OK
    print(json.dumps(failure_views.record_json(record), indent=2, default=str) if as_json
          else failure_views.show(record))
    return EXIT_OK


def replay_command(db_url: str, *, model: str | None, as_json: bool, fail_on: str = "any",
                   deadline: float | None = None, trust_remote_code: bool = False) -> int:
    """``fuzzkv replay``: exit 1 when any stored failure still fails; with ``fail_on="new"``, replay
    fixed failures too and exit 1 only when one of those fails again (a regression)."""
    from fuzzkv.replay import replay

    if deadline is not None and not 0 < deadline <= 24 * 3600:
        raise UsageError(f"--deadline must be between 0 and a day of seconds, got {deadline}.")
    store = open_store(db_url, create=False)
    reporter = ReplayJsonReporter() if as_json else ReplayConsoleReporter()
    try:
        finished = replay(store, reporter, model=model, include_fixed=fail_on == "new", deadline=deadline,
                          trust_remote_code=trust_remote_code)
    finally:
        store.close()
    failing = finished.reopened + (finished.failing if fail_on == "any" else 0)
    return EXIT_FAILURES if failing else EXIT_OK


def calibrate_command(config: RunConfig) -> int:
    """``fuzzkv calibrate``: measure and store a tolerance baseline; exit 1 if noise regressed."""
    from fuzzkv import baselines
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.runner import library_versions

    check_url(config.db_url)
    lanes = load_lanes(config)
    lane = lanes.lanes.get(config.backend)
    if lane is None:
        raise UsageError(f"backend {config.backend} cannot calibrate {config.model}: "
                         f"{lanes.unsupported.get(config.backend, 'calibration measures one backend')}.",
                         tip="use --backend hf, tl or torchtune")
    backend = lane.backends[0]
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


def all_models_command(as_json: bool) -> int:
    """``fuzzkv models --all``: every generative architecture of the installed transformers."""
    from fuzzkv.models.catalogue import architectures

    rows = architectures()
    if as_json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return EXIT_OK
    table = [("name", "mappings", "source", "builds", "cache features / why not")]
    for row in rows:
        table.append((row.name, ",".join(row.mappings), row.source, "yes" if row.builds else "no",
                      ", ".join(row.features) if row.builds else row.reason))
    print(_aligned(table))
    causal = sum("causal-lm" in row.mappings for row in rows)
    kinds = ", ".join(f"{len(of)} {kind}, of which {sum(row.builds for row in of)} build at tiny scale "
                      f"({100 * sum(row.builds for row in of) / max(len(of), 1):.0f}%)"
                      for kind in ("decoder-only", "encoder-decoder", "multimodal")
                      for of in [[row for row in rows if row.kind == kind]])
    print(f"\n{len(rows)} generative model types ({causal} causal-LM); {kinds}.")
    return EXIT_OK


def _aligned(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(r, widths)), r[-1]]).rstrip() for r in rows)


def sweep_command(config_options: dict, models: str, *, as_json: bool, report: str | None,
                  campaign: str | None = None, executor: str = "local", address: str | None = None,
                  db_given: bool = True) -> int:
    """``fuzzkv sweep``: fuzz many architectures (with ``campaign``: each with every dtype, device and backend the
    campaign file lists), each task in its own process (``executor`` local) or Ray task (``ray``), into one store.
    Exit 0 when every cell is clean, stored, expected, not applicable or could not build; 1 on a finding, a crash
    or a hang; 4 when nothing was found but a lane was blind; 5 when a cell tested nothing."""
    import time

    from fuzzkv.reports.sweep import progress_line, write_matrix
    from fuzzkv.sweep import has_failed, has_findings, is_blind, is_untested, matrix, run_sweep

    if address and executor != "ray":
        raise UsageError("--address needs --executor ray.", tip="add --executor ray, or leave out --address")
    configs = _sweep_configs(config_options, models, campaign, db_given)
    config = configs[0]
    store = open_store(config.db_url)  # a bad --db fails here, once, before any worker starts
    try:
        done = _stored(configs, store) if campaign else {}
    finally:
        store.close()
    log = sys.stderr if as_json else sys.stdout
    started = time.monotonic()
    tasks = sum(len(c.models) for c in configs)
    print(f"sweeping {tasks} task(s) ({len(config.models)} architecture(s) x {len(configs)} setting(s)) at "
          f"{config.scale} scale, {config.max_examples} examples per oracle, {_executor_said(executor, config)}, "
          f"into {RunConfig(model='-', db_url=config.db_url).to_dict()['db_url']}"
          + (f"; {len(done)} already stored, skipped" if done else ""), file=log, flush=True)
    rows = run_sweep(configs, _executor(executor, address, config.workers),
                     lambda row, n, total: print(progress_line(row, n, total), file=log, flush=True), done)
    result = matrix(config, rows, started)
    if len(configs) > 1:
        result["settings"]["campaign"] = [{"dtype": c.dtype, "device": c.device, "backend": c.backend} for c in configs]
    store = open_store(config.db_url)
    try:
        from fuzzkv.runner import library_versions

        result["sweep_id"] = store.save_sweep(result["settings"], library_versions(), result)
        if report:
            _write_report(store, report, None, log)
    finally:
        store.close()
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    else:
        write_matrix(result, sys.stdout)
    if has_findings(rows) or has_failed(rows):
        return EXIT_FAILURES
    if is_blind(rows):
        return EXIT_BLIND
    return EXIT_UNTESTED if is_untested(rows) else EXIT_OK


def _sweep_configs(config_options: dict, models: str, campaign: str | None, db_given: bool) -> list:
    """The sweep's settings: one SweepConfig, or a campaign file's one per (dtype, device, backend)."""
    from fuzzkv.sweep import SWEEP_ORACLES, SweepConfig, parse_shard, shard

    options = dict(config_options, shard=parse_shard(config_options["shard"]),
                   oracles=tuple(config_options["oracles"]) or SWEEP_ORACLES)
    check_url(options["db_url"])
    _check_oracles(options["oracles"])
    if campaign is not None:
        from fuzzkv import campaign as campaigns

        planned = campaigns.load(campaign)
        # A --db given on the command line wins over the file's (e.g. a CI's own database).
        configs = planned.sweeps(lambda names: shard(model_names(names), *options["shard"]),
                                 config_options["db_url"] if db_given or "db_url" not in planned.options else None)
        configs = [_with(c, options) for c in configs]
        check_url(configs[0].db_url)
    else:
        names = shard(model_names(models), *options["shard"])
        configs = [SweepConfig(models=tuple(names), **options)] if names else []
    if not configs or not configs[0].models:
        raise UsageError(f"shard {config_options['shard']} of {models!r} is empty.", tip="use fewer shards than models")
    return configs


def _with(config, options: dict):
    """A campaign's sweep with the command line's shard and workers (the file decides everything else)."""
    from dataclasses import replace

    kept = {"shard": options["shard"], "workers": options.get("workers", config.workers)}
    return replace(config, **kept)


def _stored(configs: list, store) -> dict:
    from fuzzkv.campaign import stored_rows
    from fuzzkv.runner import library_versions

    return stored_rows(configs, store.runs(), store.failures(status=None), library_versions())


def _executor(name: str, address: str | None, workers: int):
    if name == "ray":
        from fuzzkv.executors.ray import RayExecutor

        return RayExecutor(address)
    from fuzzkv.executors.local import LocalExecutor

    return LocalExecutor(workers)


def _executor_said(name: str, config) -> str:
    return "on Ray" if name == "ray" else f"{config.workers} worker(s)"


def _check_oracles(oracles: tuple[str, ...]) -> None:
    from fuzzkv.oracles import ORACLES

    for name in oracles:
        if name in ORACLES and not ORACLES[name].runs_on("hf"):
            raise UsageError(f"oracle {name} does not run in a sweep (it needs another backend).",
                             tip="a sweep drives transformers; run it with 'fuzzkv run --backend hf,tl' "
                                 "(or hf,torchtune)")


def model_names(models: str) -> list[str]:
    """``--models``: ``all`` (every registry name and every other fuzzed model type of the installed transformers:
    decoder-only, encoder-decoder, vision-language), comma-separated names, or ``@FILE`` (one name per line; ``#``
    starts a comment)."""
    if models == "all":
        from fuzzkv.models.catalogue import sweep_names

        return sweep_names()
    if models.startswith("@"):
        try:
            lines = Path(models[1:]).read_text().splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read the model list {models[1:]}: {exc.strerror}.",
                             tip="write one model name per line") from None
        names = [line.split("#")[0].strip() for line in lines]
    else:
        names = [name.strip() for name in models.split(",")]
    names = [name for name in names if name]
    if not names:
        raise UsageError(f"--models {models!r} names no model.", tip="e.g. --models all, --models qwen3,olmo2")
    return names


def models_table() -> str:
    """``fuzzkv models``: the registry with architecture, size and cache features."""
    rows = [("name", "architecture", "size", "cache features", "hub id")]
    for name in registry.names():
        spec = registry.get(name)
        assert spec is not None  # every listed name is registered
        rows.append((name, spec.architecture, spec.params, ", ".join(spec.features) or "-", spec.hub_id))
    return _aligned(rows)


STATUS_CHOICES = (*STATUSES, "all")
