"""The sweep's matrix, architecture x oracle, as plain data: what ``fuzzkv sweep`` prints and stores and
the HTML report draws. No torch and no other layer: reporters read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Cell states, in the order the summary counts them.
STATES = ("finding", "expected", "flaky", "blind", "untested", "crashed", "hang", "could not build", "not applicable",
          "clean", "stored")  # stored: a resumed campaign's task whose clean result an earlier run stored


@dataclass
class Cell:
    state: str
    examples: int = 0
    kind: str | None = None  # a finding's kind: mismatch or error
    max_abs_diff: float | None = None
    detail: str = ""  # why (not applicable, could not build, blind, expected) or the finding's summary
    failures: list[int] = field(default_factory=list)  # stored failure ids

    def short(self) -> str:
        """The cell as the console matrix shows it."""
        if self.state in ("finding", "expected", "flaky") and self.max_abs_diff is not None:
            return f"{self.state} {self.max_abs_diff:.2g}"
        if self.state in ("finding", "expected") and self.kind == "error":
            return f"{self.state} error"
        return self.state


@dataclass
class Row:
    """One architecture of the sweep: its cells, root causes and where it came from."""

    model: str
    status: str  # "ran", or the state of every cell: could not build / crashed / hang / not applicable
    reason: str = ""
    seconds: float = 0.0
    source: str = ""
    run_id: int | None = None
    cells: dict[str, Cell] = field(default_factory=dict)
    root_causes: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        cells = {name: Cell(**cell) for name, cell in data.get("cells", {}).items()}
        return cls(**{**data, "cells": cells})
