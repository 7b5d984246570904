"""The opt-in cache-surface oracles on clean models: every verdict of N drawn cases per oracle and model, tallied
by what failed (a measurement, never a timed test).

A run stops searching an oracle at its first failure; this drives each oracle's strategy for N cases regardless,
checks every case at the run's calibrated tolerance, and groups the failures by signature (kind, comparison or
exception), so one real library bug does not hide the false alarms behind it. Every signature must be a triaged
finding (``findings/``) or a documented limitation; anything else is a false alarm to fix.

    .venv/bin/python benchmarks/surfaces.py --models llama,gpt2 --oracles quantized,beam --examples 100
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

from fuzzkv import registry  # noqa: E402
from fuzzkv.backends.loader import load_lanes  # noqa: E402
from fuzzkv.config import RunConfig  # noqa: E402
from fuzzkv.oracles import ORACLES  # noqa: E402
from fuzzkv.oracles.check import check_within  # noqa: E402
from fuzzkv.runner import case_space  # noqa: E402
from fuzzkv.tolerance import calibrate  # noqa: E402

SURFACES = [name for name, oracle in ORACLES.items() if not oracle.default]


def signature(verdict) -> str:
    """What failed, without the numbers: kind plus comparison, or the exception and its message's shape."""
    if verdict.kind == "refused":
        return "refused (documented): " + re.sub(r"\d+", "N", (verdict.error or "")[:120])
    if verdict.kind == "mismatch":
        return f"mismatch: {verdict.comparison}"
    return "error: " + re.sub(r"\d+", "N", (verdict.error or "")[:160])


def measure(model: str, oracle_name: str, examples: int, seed: int, dtype: str, loaded: dict) -> dict:
    """One oracle's tally on one model; ``loaded`` keeps each model's lane and calibrated bounds between oracles."""
    started = time.monotonic()
    config = RunConfig(model=model, scale="tiny", dtype=dtype, db_url="memory:", max_examples=examples, seed=seed)
    if model not in loaded:
        loaded.clear()  # one model in memory at a time
        loaded[model] = (load_lanes(config).lanes["hf"], None)
    lane, bounds = loaded[model]
    oracle = ORACLES[oracle_name]
    why = lane.capabilities.why_not(oracle.min_batch, oracle.needs)
    if why:
        return {"model": model, "oracle": oracle_name, "not_applicable": why}
    if bounds is None:
        bounds = calibrate(lane.backends[0], dtype, max_prompt_len=config.prompt_len_cap,
                           max_new_tokens=config.new_tokens_cap).bounds
        loaded[model] = (lane, bounds)
    tally: Counter[str] = Counter()
    examples_of: dict[str, str] = {}

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), derandomize=True)
    @given(oracle.strategy(case_space(config, lane)))
    def drive(case):
        verdict = check_within(oracle, lane, case, bounds, config.deadline)
        key = "pass" if verdict.kind == "pass" else signature(verdict)
        tally[key] += 1
        examples_of.setdefault(key, case.to_json())

    drive()
    return {"model": model, "oracle": oracle_name, "tally": dict(tally), "first_case": examples_of,
            "seconds": round(time.monotonic() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(registry.names()))
    parser.add_argument("--oracles", default=",".join(SURFACES))
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", help="also write the results here (one JSON object per line, as they come)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    loaded: dict = {}
    for model in args.models.split(","):
        for oracle in args.oracles.split(","):
            row = measure(model, oracle, args.examples, args.seed, args.dtype, loaded)
            if "not_applicable" in row:
                print(f"{model:20s} {oracle:20s} not applicable: {row['not_applicable']}", flush=True)
            else:
                passed = row["tally"].get("pass", 0)
                print(f"{model:20s} {oracle:20s} {passed:4d} pass  {row['seconds']:7.1f}s", flush=True)
                for key, count in sorted(row["tally"].items()):
                    if key != "pass":
                        print(f"    {count:4d} x {key}\n           first: {row['first_case'][key]}", flush=True)
            if args.json:
                with open(args.json, "a") as out:
                    out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
