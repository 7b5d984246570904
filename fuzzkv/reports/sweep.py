"""How ``fuzzkv sweep`` shows itself on the console: a line per architecture as it finishes, then the
matrix, the root causes and the counts."""

from __future__ import annotations

from typing import Any, TextIO

from fuzzkv.matrix import STATES, Row


def progress_line(row: Row, done: int, total: int) -> str:
    """``[3/170] qwen3  41.2 s  5 clean, 1 finding``"""
    counts: dict[str, int] = {}
    for cell in row.cells.values():
        counts[cell.state] = counts.get(cell.state, 0) + 1
    said = ", ".join(f"{n} {state}" for state in STATES for n in [counts.get(state, 0)] if n)
    why = f": {row.reason}" if row.status != "ran" and row.reason else ""
    return f"[{done}/{total}] {row.model}  {row.seconds:.1f} s  {said}{why}"


def write_matrix(matrix: dict[str, Any], out: TextIO) -> None:
    """The matrix as a table, then each root cause and the totals."""
    oracles = matrix["oracles"]
    rows = [Row.from_dict(data) for data in matrix["rows"]]
    table = [("architecture", *oracles)] + [(row.model, *(row.cells[o].short() for o in oracles)) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() + "\n")
    causes = [(row, cause) for row in rows for cause in row.root_causes]
    if causes:
        out.write(f"\n{len(causes)} root cause(s):\n")
        for row, cause in causes:
            where = f", first diverging at layer {cause['where']['layer']} {cause['where']['part']}" if cause["where"] else ""
            ids = ", ".join(f"#{i}" for i in cause["failures"])
            out.write(f"  {row.model}: {cause['kind']} at {cause['shape']}{where}; max |diff| {cause['max_abs_diff']:.3g}; "
                      f"oracles {', '.join(cause['oracles'])} (stored {ids or '-'}; 'fuzzkv show ID' for the script)\n")
    unusual = [row for row in rows if row.status != "ran"]
    for row in unusual:
        out.write(f"  {row.model}: {row.status}: {row.reason}\n")
    counts = ", ".join(f"{n} {state}" for state, n in matrix["counts"].items() if n)
    out.write(f"\n{len(rows)} architecture(s) x {len(oracles)} oracle(s) in {matrix['seconds']:.0f} s: {counts}\n")
