"""Stored failures for people and programs: the table of ``fuzzkv failures``, the record of
``fuzzkv show``, and the JSON shape both share with ``fuzzkv run --json``."""

from __future__ import annotations

from fuzzkv import rootcause
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


def by_root_cause(records: list[FailureRecord]) -> list[list[FailureRecord]]:
    """Stored failures grouped by root cause (:mod:`fuzzkv.rootcause`), in the order of each group's first."""
    return rootcause.group(records, rootcause.of_record)


def cause_line(number: int, members: list[FailureRecord]) -> str:
    """One line naming a root cause: its kind, model and backend, the oracles that saw it, shape and place."""
    first = members[0]
    oracles = rootcause.oracles_of(members, lambda r: r.oracle)
    place = rootcause.describe_where(rootcause.where(first.diagnosis, first.metrics))
    flaky = " FLAKY" if first.status == "flaky" else ""
    return (f"root cause {number} [{first.kind}]{flaky} {first.model} ({first.backend}): {len(oracles)} oracle(s) "
            f"{', '.join(oracles)}; {rootcause.describe_shape(first.case.to_dict())}; breaks at {place}")


def table(records: list[FailureRecord]) -> str:
    """The failures, one row each (its own id), grouped under a line per root cause."""
    if not records:
        return "no stored failures match"
    header = ("id", "status", "model", "oracle", "kind", "max diff", "tolerance", "seen", "last seen", "case")
    groups = by_root_cause(records)
    rows = [[_row(r) for r in members] for members in groups]
    widths = [max(len(row[i]) for row in [header, *(row for group in rows for row in group)]) for i in range(len(header))]

    def aligned(row: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()

    lines = ["  " + aligned(header)]
    for number, (members, group) in enumerate(zip(groups, rows), 1):
        lines.append(cause_line(number, members))
        lines += ["  " + aligned(row) for row in group]
    return "\n".join(lines)


def _row(r: FailureRecord) -> tuple[str, ...]:
    diff = "-" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}"
    return (str(r.id), r.status, r.model, r.oracle, r.kind, diff, f"{r.tolerance:.3g}", str(r.times_seen),
            r.last_seen.strftime("%Y-%m-%d %H:%M"), r.case.describe())


def show(record: FailureRecord) -> str:
    """The whole record (with where it breaks), then its standalone reproduction script."""
    data = record_json(record)
    script = data.pop("reproduction")
    lines = [f"failure {record.id}: {summary(record)}", f"  minimal case: {record.case.describe()}"]
    broken = rootcause.where_it_breaks(record.diagnosis)
    if broken:
        lines.append(f"  where it breaks: {broken}")
    for key, value in data.items():
        lines.append(f"  {key}: {value}")
    lines += ["", f"# --- reproduction ('fuzzkv show {record.id} --script > repro.py' saves it alone; run with python) ---",
              script.rstrip()]
    return "\n".join(lines)
