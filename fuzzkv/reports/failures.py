"""Stored failures for people and programs: the table of ``fuzzkv failures``, the record of
``fuzzkv show``, and the JSON shape both share with ``fuzzkv run --json``."""

from __future__ import annotations

from fuzzkv.db import FailureRecord


def summary(record: FailureRecord) -> str:
    if record.kind == "error":
        return f"{record.oracle}: error - {record.error}"
    return f"{record.oracle}: max |diff| {record.max_abs_diff:.3g} > tolerance {record.tolerance:.3g}"


def record_json(record: FailureRecord) -> dict:
    """The fields of a failure in ``run --json``, plus its identity and history in the store."""
    return {
        "id": record.id, "status": record.status, "model": record.model, "backend": record.backend,
        "oracle": record.oracle, "kind": record.kind, "max_abs_diff": record.max_abs_diff,
        "tolerance": record.tolerance, "tolerance_source": record.tolerance_source, "case": record.case.to_dict(),
        "metrics": record.metrics, "error": record.error, "summary": summary(record),
        "fingerprint": record.fingerprint, "first_seen": record.first_seen.isoformat(),
        "last_seen": record.last_seen.isoformat(), "times_seen": record.times_seen, "run_id": record.run_id,
        "versions": record.versions, "settings": record.settings, "reproduction": record.reproduction,
    }


def table(records: list[FailureRecord]) -> str:
    if not records:
        return "no stored failures match"
    rows = [("id", "status", "model", "oracle", "kind", "max diff", "tolerance", "seen", "last seen", "case")]
    for r in records:
        diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
        rows.append((str(r.id), r.status, r.model, r.oracle, r.kind, diff, f"{r.tolerance:.3g}", str(r.times_seen),
                     r.last_seen.strftime("%Y-%m-%d %H:%M"), r.case.describe()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def show(record: FailureRecord) -> str:
    """The whole record, then its standalone reproduction script."""
    data = record_json(record)
    script = data.pop("reproduction")
    lines = [f"failure {record.id}: {summary(record)}", f"  minimal case: {record.case.describe()}"]
    for key, value in data.items():
        lines.append(f"  {key}: {value}")
    lines += ["", "# --- reproduction (save as repro.py, run with python) ---", script.rstrip()]
    return "\n".join(lines)
