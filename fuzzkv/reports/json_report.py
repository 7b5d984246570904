"""The ``--json`` reporter: collects the run and prints ONE JSON object at the end."""

from __future__ import annotations

import json
import sys
from typing import TextIO

from fuzzkv import events, rootcause


def failure_json(event: events.FailureFound) -> dict:
    """The stable JSON shape of one failure (shared by ``run --json`` and later commands)."""
    v = event.verdict
    return {
        "oracle": v.oracle, "backend": event.lane, "kind": v.kind, "comparison": v.comparison,
        "max_abs_diff": v.metrics.max_abs_diff if v.metrics else None,
        "tolerance": v.tolerance, "case": v.case.to_dict(),
        "metrics": v.metrics.to_dict() if v.metrics else None,
        "error": v.error, "summary": v.summary(), "fingerprint": event.fingerprint,
        "stored_id": event.stored_id, "novelty": event.novelty, "status": event.status,
        "recheck": event.recheck or None, "diagnosis": event.diagnosis, "reproduction": event.reproduction,
    }


def root_causes(failures: list[dict], model: str = "") -> list[dict]:
    """The failures grouped by root cause (:mod:`fuzzkv.rootcause`): each with its kind, backend, the oracles that
    saw it, its first failure's summary, minimal case and diagnosis, and its failures as indices into
    ``failures`` (with their store ids and fingerprints)."""
    index = {id(f): i for i, f in enumerate(failures)}
    causes = []
    for members in rootcause.group(failures, lambda f: rootcause.of_json(f, model)):
        first = members[0]
        causes.append({
            "kind": first["kind"], "backend": first["backend"], "status": "flaky" if first["status"] == "flaky" else "open",
            "oracles": rootcause.oracles_of(members, lambda f: f["oracle"]), "summary": first["summary"],
            "shape": rootcause.describe_shape(first["case"]), "case": first["case"],
            "where": rootcause.where(first["diagnosis"], first["metrics"]),
            "explanation": (first["diagnosis"] or {}).get("explanation"),
            "max_abs_diff": max((f["max_abs_diff"] for f in members if f["max_abs_diff"] is not None), default=None),
            "failures": [index[id(f)] for f in members], "stored_ids": [f["stored_id"] for f in members],
            "fingerprints": [f["fingerprint"] for f in members]})
    return causes


class JsonReporter:
    """Collects events; :meth:`finish` prints the run as one JSON object."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.data: dict = {"failures": []}

    def __call__(self, event) -> None:
        if isinstance(event, events.RunStarted):
            self.data.update(settings=event.settings, versions=event.versions, model_source=event.model_source,
                             backend=event.backend)
        elif isinstance(event, events.ToleranceChosen):
            tolerance = {"value": event.value, "rms": event.rms_value, "source": event.source,
                         "regression": event.regression}
            if event.lane == "hf" or "tolerance" not in self.data:
                self.data["tolerance"] = tolerance
            self.data.setdefault("tolerances", {})[event.lane] = tolerance
        elif isinstance(event, events.CanariesChecked):
            self.data.setdefault("canaries", {})[event.lane] = {
                "caught": list(event.caught), "missed": list(event.missed),
                "not_applicable": list(event.not_applicable), "blind": event.blind}
        elif isinstance(event, events.BackendUnsupported):
            self.data.setdefault("unsupported", {})[event.lane] = event.reason
        elif isinstance(event, events.OracleSkipped):
            self.data.setdefault("not_applicable", {})[events.oracle_key(event.oracle, event.lane)] = event.reason
        elif isinstance(event, events.OracleFinished):
            self.data.setdefault("oracles", {})[events.oracle_key(event.oracle, event.lane)] = {
                "examples": event.examples, "failures": event.failures, "seconds": round(event.elapsed, 3),
                "stopped_by_time": event.stopped_by_time, "first_failure_at": event.first_failure_at,
                "incomplete": event.incomplete}
        elif isinstance(event, events.FailureFound):
            self.data["failures"].append(failure_json(event))
        elif isinstance(event, events.RunFinished):
            self.data.update(examples=event.examples, seconds=round(event.elapsed, 3), run_id=event.run_id,
                             interrupted=event.interrupted, shrinking=list(event.shrinking), error=event.error,
                             blind=event.blind, untested=event.untested, incomplete=event.incomplete)
            self.data["root_causes"] = root_causes(self.data["failures"], self.data.get("settings", {}).get("model", ""))
            self.stream.write(json.dumps(self.data, indent=2, default=str) + "\n")
            self.stream.flush()


class ReplayJsonReporter:
    """Collects ``fuzzkv replay`` events; prints one JSON object at the end."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.data: dict = {"replayed": [], "skipped": []}

    def __call__(self, event) -> None:
        from fuzzkv.reports.failures import record_json

        if isinstance(event, events.ReplayChecked):
            entry = record_json(event.record)
            entry.update(outcome=event.outcome, now=_verdict_numbers(event.verdict))
            self.data["replayed"].append(entry)
        elif isinstance(event, events.ReplaySkipped):
            self.data["skipped"].append({"ids": list(event.failure_ids), "reason": event.reason})
        elif isinstance(event, events.ReplayFinished):
            self.data.update(failing=event.failing, fixed=event.fixed, reopened=event.reopened,
                             skipped_count=event.skipped,
                             seconds=round(event.elapsed, 3))
            self.stream.write(json.dumps(self.data, indent=2, default=str) + "\n")
            self.stream.flush()


def _verdict_numbers(verdict) -> dict:
    return {"kind": verdict.kind, "max_abs_diff": verdict.metrics.max_abs_diff if verdict.metrics else None,
            "tolerance": verdict.tolerance, "error": verdict.error}
