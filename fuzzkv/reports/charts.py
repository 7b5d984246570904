"""Chart geometry for the HTML report: plain numbers the template draws as inline SVG.

Nothing here renders markup, so nothing here can inject any: the template places these
numbers in SVG attributes with autoescaping on. Values span many orders of magnitude
(rounding at 1e-7, bugs at 1), so difference axes are logarithmic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 12, 36


@dataclass
class Chart:
    """An x/y chart in SVG user units: points, ticks, and reference lines."""

    width: int = WIDTH
    height: int = HEIGHT
    points: list = field(default_factory=list)  # dicts: x, y, value label, bad flag
    x_ticks: list = field(default_factory=list)  # (x, label)
    y_ticks: list = field(default_factory=list)  # (y, label)
    lines: list = field(default_factory=list)  # dicts: x1, y1, x2, y2, kind, label
    path: str = ""
    x_label: str = ""
    y_label: str = ""

    @property
    def plot(self) -> dict:
        return {"left": LEFT, "right": self.width - RIGHT, "top": TOP, "bottom": self.height - BOTTOM}


def _log_scale(low: float, high: float):
    """A function mapping a positive value to a y coordinate, and the decade ticks it spans."""
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    hi = max(hi, lo + 1)

    def y(value: float) -> float:
        value = min(max(value, 10.0 ** lo), 10.0 ** hi)
        share = (math.log10(value) - lo) / (hi - lo)
        return round(HEIGHT - BOTTOM - share * (HEIGHT - BOTTOM - TOP), 1)

    step = max(1, (hi - lo) // 6)
    return y, [(y(10.0 ** e), f"1e{e}") for e in range(lo, hi + 1, step)]


def _x_scale(count: int, width: int = WIDTH):
    span = width - LEFT - RIGHT

    def x(index: float) -> float:
        return round(LEFT + (index + 0.5) * span / max(count, 1), 1)

    return x


def position_chart(per_position: list, tolerance: float, first_bad: int | None, prompt_length: int) -> Chart | None:
    """Per-position largest |logit difference| with the tolerance line: which step breaks, how fast it grows."""
    values = [v for v in per_position if v is not None]
    if not values or tolerance <= 0:
        return None
    finite = [v for v in values if math.isfinite(v)]
    floor = max(tolerance / 1e3, 1e-12)
    y, y_ticks = _log_scale(floor, max(finite + [tolerance * 10]))
    x = _x_scale(len(per_position))
    chart = Chart(y_ticks=y_ticks, x_label="position (logits predicting the next token)",
                  y_label="max |logit diff|")
    for i, value in enumerate(per_position):
        if value is None:
            continue
        shown = value if math.isfinite(value) else 10.0 ** 9
        chart.points.append({"x": x(i), "y": y(max(shown, floor)), "label": f"position {i}: {value:.3g}",
                             "bad": value > tolerance, "first": i == first_bad})
    chart.path = " ".join(f"{'M' if n == 0 else 'L'}{p['x']},{p['y']}" for n, p in enumerate(chart.points))
    step = max(1, len(per_position) // 12)
    chart.x_ticks = [(x(i), str(i)) for i in range(0, len(per_position), step)]
    plot = chart.plot
    chart.lines.append({"x1": plot["left"], "x2": plot["right"], "y1": y(tolerance), "y2": y(tolerance),
                        "kind": "tolerance", "label": f"tolerance {tolerance:.3g}"})
    if 0 < prompt_length <= len(per_position):
        decode_x = x(prompt_length - 1) - (x(1) - x(0)) / 2
        chart.lines.append({"x1": decode_x, "x2": decode_x, "y1": plot["top"], "y2": plot["bottom"],
                            "kind": "decode", "label": "decoding starts"})
    return chart


def history_chart(runs: list[dict]) -> Chart | None:
    """Examples per run (bars) and failures found per run (marks), oldest run first."""
    if not runs:
        return None
    most = max([r.get("examples") or 0 for r in runs] + [1])
    x = _x_scale(len(runs))
    span = (WIDTH - LEFT - RIGHT) / len(runs)
    chart = Chart(x_label="run", y_label="examples")
    base = HEIGHT - BOTTOM
    for i, run in enumerate(runs):
        examples, failures = run.get("examples") or 0, run.get("failures") or 0
        top = base - examples / most * (HEIGHT - BOTTOM - TOP)
        chart.points.append({"x": x(i), "y": round(top, 1), "bar_x": round(x(i) - span * 0.35, 1),
                             "bar_width": round(span * 0.7, 1), "bar_height": round(base - top, 1),
                             "bad": failures > 0, "label": f"run {run['id']}: {examples} examples, "
                                                           f"{failures} failure(s), {run.get('outcome', '')}"})
    step = max(1, len(runs) // 10)
    chart.x_ticks = [(x(i), str(runs[i]["id"])) for i in range(0, len(runs), step)]
    chart.y_ticks = [(base, "0"), (TOP, str(most))]
    return chart


def layer_grid(diagnosis: dict, parts: tuple[str, ...]) -> dict | None:
    """Cells of a layers x parts grid, coloured by how far each relative difference is past the threshold."""
    layers, threshold = diagnosis.get("layers") or [], diagnosis.get("threshold") or 0
    if not layers or threshold <= 0:
        return None
    shown = [p for p in parts if any(p in entry for entry in layers)]
    first = diagnosis.get("first") or {}
    rows = []
    for entry in layers:
        cells = []
        for part in shown:
            value = entry.get(part)
            cells.append({"part": part, "value": value, "colour": _colour(value, threshold),
                          "first": first.get("layer") == entry["layer"] and first.get("part") == part,
                          "label": "-" if value is None else f"{value:.1e}"})
        rows.append({"layer": entry["layer"], "cells": cells})
    return {"parts": shown, "rows": rows, "threshold": threshold}


def _colour(value: float | None, threshold: float) -> str:
    """Green at rounding level, through yellow, to red far past the threshold."""
    if value is None:
        return "#eeeeee"
    if value <= threshold:
        return "#d9f0d3"
    decades = min(math.log10(value / threshold), 4.0) / 4.0
    return f"hsl({int(45 - 45 * decades)}, 90%, {int(70 - 25 * decades)}%)"
