"""One architecture of a sweep, in a process of its own: ``python -m fuzzkv.executors.worker MODEL
SETTINGS OUT THREADS`` fuzzes MODEL as ``fuzzkv run`` would and writes its result to OUT as JSON:

``{"model", "model_type", "status": "ran" | "could not build" | "not applicable", "reason", "seconds",
"source", "run_id", "oracles": {name: {examples, failures, ...}}, "not_applicable": {name: why},
"blind": {lane: why}, "failures": [failure JSON + "where": the first diverging (layer, part)]}``
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path
from typing import Any

from fuzzkv.errors import CannotBuildModel, FuzzkvError, NotFuzzable
from fuzzkv.reports.json_report import JsonReporter
from fuzzkv.sweep import SweepConfig


def fuzz_one(model: str, config: SweepConfig) -> dict[str, Any]:
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.db import open_store
    from fuzzkv.runner import run

    started = time.monotonic()
    run_config = config.run_config(model)
    try:
        lanes = load_lanes(run_config)
    except NotFuzzable as exc:
        return _ended(model, "not applicable", exc.message, started)
    except CannotBuildModel as exc:
        return _ended(model, "could not build", exc.message, started)
    out = io.StringIO()
    store = open_store(config.db_url)
    try:
        run(run_config, store, JsonReporter(out), lanes)
        data = json.loads(out.getvalue())
        for failure in data["failures"]:
            record = store.failure(failure["stored_id"]) if failure["stored_id"] is not None else None
            failure["where"] = (record.diagnosis or {}).get("first") if record else None
            failure.pop("reproduction", None)  # stored with the failure; the matrix needs only its id
    finally:
        store.close()
    return {"model": model, "model_type": lanes.info.model_type, "status": "ran", "reason": "",
            "seconds": round(time.monotonic() - started, 1), "source": lanes.info.source, "run_id": data["run_id"],
            "oracles": data.get("oracles", {}), "not_applicable": data.get("not_applicable", {}),
            "blind": data.get("blind", {}), "failures": data["failures"], "error": data.get("error")}


def _ended(model: str, status: str, reason: str, started: float) -> dict[str, Any]:
    return {"model": model, "status": status, "reason": reason, "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str]) -> int:
    model, settings, out, threads = argv
    import torch

    torch.set_num_threads(int(threads))
    data = json.loads(settings)
    data.update(models=tuple(data["models"]), oracles=tuple(data["oracles"]),
                shard=tuple(int(x) for x in data["shard"].split("/")))
    try:
        result = fuzz_one(model, SweepConfig(**data))
    except FuzzkvError as exc:  # the store or the settings: the sweep shows it as this model's crash
        print(exc.one_line(), file=sys.stderr)
        return 2
    Path(out).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
