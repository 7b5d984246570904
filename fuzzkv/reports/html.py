"""The HTML report (``fuzzkv report``, ``fuzzkv run --report``): ONE self-contained file.

Everything is inline (CSS, a little JavaScript for sorting, filtering and copying, SVG
charts), so the file works opened from disk, attached to a CI run, or mailed, with no
network. Jinja2 autoescaping is on for the whole template: model names, error messages,
tracebacks and scripts are text, never markup, whatever they contain.
"""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader

from fuzzkv._version import __version__
from fuzzkv.db import FailureRecord, Store
from fuzzkv.errors import UsageError
from fuzzkv.matrix import STATES, Row
from fuzzkv.reports import charts
from fuzzkv.reports.failures import by_root_cause, summary
from fuzzkv.rootcause import describe_shape, describe_where, oracles_of, where, where_it_breaks

PARTS = ("keys", "values", "attention", "mlp", "output")
PART_LABELS = {"keys": "keys", "values": "values", "attention": "attention", "mlp": "MLP", "output": "layer out"}


def _environment() -> Environment:
    return Environment(loader=PackageLoader("fuzzkv.reports", "templates"), autoescape=True,
                       trim_blocks=True, lstrip_blocks=True)


def write_report(store: Store, out: str | Path, *, model: str | None = None, run_id: int | None = None) -> Path:
    """Render the report of ``store`` (optionally one model's, or one run's failures) to ``out``."""
    path = Path(out)
    if path.is_dir():
        raise UsageError(f"report path {path} is a directory.", tip="pass a file name, e.g. reports/index.html")
    html = render(report_context(store, model=model, run_id=run_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(path)  # a reader never sees half a report
    return path


def render(context: dict) -> str:
    return _environment().get_template("report.html.j2").render(**context)


def report_context(store: Store, *, model: str | None = None, run_id: int | None = None) -> dict:
    """Everything the template shows, as plain values."""
    records = store.failures(model=model)
    if run_id is not None:
        records = [r for r in records if r.run_id == run_id]
    runs = [r for r in store.runs() if model is None or r["settings"].get("model") == model]
    views = {id(r): failure_view(r) for r in records}
    return {
        "title": f"fuzzkv report{f': {model}' if model else ''}",
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "fuzzkv_version": __version__,
        "scope": _scope(model, run_id),
        "summary": _summary(records, runs),
        "failures": [views[id(r)] for r in records],
        "root_causes": [root_cause_view(number, members, [views[id(r)] for r in members])
                        for number, members in enumerate(by_root_cause(records), 1)],
        "filters": {key: sorted({getattr(r, key) for r in records}) for key in ("model", "oracle", "status")},
        "history": _history(runs),
        "runs": list(reversed(runs))[:50],
        "part_labels": PART_LABELS,
        "sweep": sweep_view(store.sweeps()[-1]) if model is None and run_id is None and store.sweeps() else None,
        # Defence in depth beside escaping: only the report's own script, carrying this nonce, may run.
        "nonce": secrets.token_urlsafe(16),
    }


def _scope(model: str | None, run_id: int | None) -> str:
    parts = [f"model {model}" if model else "all models", f"failures first found by run {run_id}" if run_id else ""]
    return ", ".join(p for p in parts if p)


def _summary(records: list[FailureRecord], runs: list[dict]) -> dict:
    statuses = Counter(r.status for r in records)
    latest = runs[-1]["versions"] if runs else (records[-1].versions if records else {})
    return {
        "models": sorted({r["settings"].get("model", "?") for r in runs} | {r.model for r in records}),
        "backends": sorted({r.backend for r in records} | {r["settings"].get("backend", "?") for r in runs}),
        "runs": len(runs), "examples": sum(r.get("examples") or 0 for r in runs),
        "open": statuses.get("open", 0), "fixed": statuses.get("fixed", 0), "flaky": statuses.get("flaky", 0),
        "versions": {k: v for k, v in latest.items() if v},
    }


def failure_view(record: FailureRecord) -> dict:
    """One failure as the template shows it: the record plus its charts."""
    metrics, diagnosis = record.metrics or {}, record.diagnosis or {}
    ratio = record.max_abs_diff / record.tolerance if record.max_abs_diff is not None and record.tolerance else None
    return {
        "record": record, "summary": summary(record), "ratio": ratio,
        "case": record.case.describe(), "prompts": [list(p) for p in record.case.prompts],
        "texts": diagnosis.get("texts"), "metrics": {k: v for k, v in metrics.items() if k != "per_position"},
        "positions": charts.position_chart(metrics.get("per_position") or [], record.tolerance,
                                           metrics.get("first_bad_position"), record.case.padded_length),
        "diagnosis": diagnosis, "grid": charts.layer_grid(diagnosis, PARTS),
        "first_seen": record.first_seen.strftime("%Y-%m-%d %H:%M"),
        "last_seen": record.last_seen.strftime("%Y-%m-%d %H:%M"),
    }


def root_cause_view(number: int, members: list[FailureRecord], views: list[dict]) -> dict:
    """One root cause (see :mod:`fuzzkv.rootcause`): the oracles that saw it, and its failures' views."""
    first = members[0]
    return {"number": number, "kind": first.kind, "model": first.model, "backend": first.backend,
            "flaky": first.status == "flaky", "oracles": oracles_of(members, lambda r: r.oracle),
            "ids": [r.id for r in members], "shape": describe_shape(first.case.to_dict()),
            "where": describe_where(where(first.diagnosis, first.metrics)),
            "explanation": where_it_breaks(first.diagnosis), "failures": views}


def _history(runs: list[dict]) -> list[dict]:
    """One chart per model, runs oldest first."""
    by_model: dict[str, list[dict]] = {}
    for run in runs:
        by_model.setdefault(run["settings"].get("model", "?"), []).append(run)
    return [{"model": name, "chart": charts.history_chart(model_runs[-40:])}
            for name, model_runs in sorted(by_model.items())]


def sweep_view(stored: dict) -> dict:
    """The latest stored sweep as the template's matrix: each cell with its short text."""
    matrix = stored["matrix"]
    rows: list[dict[str, Any]] = []
    for data in matrix["rows"]:
        row = Row.from_dict(data)
        cells = {name: {"state": cell.state, "short": cell.short(), "detail": cell.detail}
                 for name, cell in row.cells.items()}
        rows.append({"model": row.model, "source": row.source, "seconds": row.seconds, "cells": cells,
                     "root_causes": row.root_causes, "states": "|".join(sorted({c.state for c in row.cells.values()}))})
    states = [state for state in STATES if any(state in str(row["states"]).split("|") for row in rows)]
    return {"id": stored["id"], "created": stored["created"].strftime("%Y-%m-%d %H:%M UTC"), "rows": rows,
            "oracles": matrix["oracles"], "states": states, "root_causes": matrix["root_causes"],
            "seconds": matrix["seconds"], "versions": stored["versions"]}
