"""Root causes: failures that are one bug seen by several oracles.

A planted +0.05-when-cached bug is found by decode, chunked and generate; each shrinks it to the smallest case it
can drive (decode feeds a 2-token prompt in two chunks, generate a 1-token prompt generating 2 tokens) and each
stores its own failure. They are one root cause when they share

- the model and backend (lane) they were found on,
- the kind (mismatch or error),
- the minimal case's shape: its rows, its padding side (where rows differ in length), and how many positions a
  row spans (longest prompt plus new tokens: where the oracles split a sequence into prompt, chunks and generated
  tokens differently, the bug's reach is the same),
- where the paths part: the diagnosis' first diverging (layer, part, position) where it was measured, else the
  first position whose difference exceeds the tolerance.

:func:`key` is the one definition; :func:`of_event`, :func:`of_record` and :func:`of_json` read it from a run's
event, a stored failure and a failure's JSON (``run --json``, a sweep worker's result). Every failure is still
stored and listed on its own (its id, fingerprint and replay are unchanged): grouping is how they are shown.

No torch here: reporters and the CLI import it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def case_shape(case: Mapping[str, Any]) -> tuple:
    """A minimal case's shape, for grouping: rows, positions a row spans (longest prompt + new tokens), padding."""
    lengths = [len(p) for p in case["prompts"]]
    padded = len(set(lengths)) > 1
    return (len(lengths), max(lengths) + case["max_new_tokens"], case["padding_side"] if padded else "-")


def describe_shape(case: Mapping[str, Any]) -> str:
    """A case's shape in words (the case itself, not only its key: "batch 2, prompt 2, left-padded, 2 new token(s)")."""
    lengths = [len(p) for p in case["prompts"]]
    pad = f", {case['padding_side']}-padded" if len(set(lengths)) > 1 else ""
    return f"batch {len(lengths)}, prompt {max(lengths)}{pad}, {case['max_new_tokens']} new token(s)"


def where(diagnosis: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Where the paths part: the diagnosis' first diverging layer, part and position where it was measured, else
    the first position past the tolerance (None for an error, which has no numbers)."""
    first = (diagnosis or {}).get("first")
    if first:
        return {"layer": first.get("layer"), "part": first.get("part"), "position": first.get("position")}
    position = (metrics or {}).get("first_bad_position")
    return {"position": position} if position is not None else None


def describe_where(place: Mapping[str, Any] | None) -> str:
    if not place:
        return "-"
    at = f" from position {place['position']}" if place.get("position") is not None else ""
    if "layer" in place:
        return f"layer {place['layer']} {place['part']}{at}"
    return f"position {place['position']}"


def where_it_breaks(diagnosis: Mapping[str, Any] | None) -> str:
    """The diagnosis in one line: where the paths part, or why that was not measured ("" when neither)."""
    diagnosis = diagnosis or {}
    if diagnosis.get("explanation"):
        return str(diagnosis["explanation"])
    if diagnosis.get("unavailable"):
        return f"not measured ({diagnosis['unavailable']})"
    return ""


def key(*, model: str, backend: str, kind: str, case: Mapping[str, Any], diagnosis: Mapping[str, Any] | None,
        metrics: Mapping[str, Any] | None, flaky: bool = False) -> tuple:
    """The root cause a failure belongs to: failures with equal keys are one bug (see the module's docstring). A
    flaky failure (its re-run passed) is never grouped with confirmed ones."""
    return (model, backend, kind, case_shape(case), json.dumps(where(diagnosis, metrics), sort_keys=True), flaky)


def of_event(event: Any, model: str = "") -> tuple:
    """The key of a run's ``FailureFound`` event (or an API ``Finding``: the same fields)."""
    v = event.verdict
    return key(model=model, backend=event.lane, kind=v.kind, case=v.case.to_dict(), diagnosis=event.diagnosis,
               metrics=v.metrics.to_dict() if v.metrics else None, flaky=event.status == "flaky")


def of_record(record: Any) -> tuple:
    """The key of a stored ``FailureRecord``."""
    return key(model=record.model, backend=record.backend, kind=record.kind, case=record.case.to_dict(),
               diagnosis=record.diagnosis, metrics=record.metrics, flaky=record.status == "flaky")


def of_json(failure: Mapping[str, Any], model: str = "") -> tuple:
    """The key of a failure as ``run --json`` prints it (a sweep worker's adds ``where``: the diagnosis' first)."""
    diagnosis = failure.get("diagnosis") or ({"first": failure["where"]} if failure.get("where") else None)
    return key(model=model, backend=failure.get("backend") or "", kind=failure["kind"], case=failure["case"],
               diagnosis=diagnosis, metrics=failure.get("metrics"), flaky=failure.get("status") == "flaky")


def group(items: Iterable[T], key_of: Callable[[T], tuple]) -> list[list[T]]:
    """``items`` grouped by root cause, each group in the items' order, the groups in order of their first item."""
    groups: dict[tuple, list[T]] = {}
    for item in items:
        groups.setdefault(key_of(item), []).append(item)
    return list(groups.values())


def oracles_of(members: Iterable[Any], oracle: Callable[[Any], str]) -> list[str]:
    """The distinct oracles that saw a root cause, in order."""
    return list(dict.fromkeys(oracle(m) for m in members))
