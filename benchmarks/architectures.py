"""Which causal-LM architectures of the installed transformers fuzzkv can shrink, build and fuzz (a measurement,
never a test).

For every model_type transformers maps to a causal-LM class: its kind (decoder-only, encoder, ...), whether
its generic tiny config builds and runs a cached decode step, why not, its cache features, its parameter
count, and, with weights redrawn by ``hf_paths.sensitise``, the std of its logits and the largest
|cached - uncached| logit difference of one decode step (~1e-6 for a correct cache).

    .venv/bin/python benchmarks/architectures.py                      # every architecture
    .venv/bin/python benchmarks/architectures.py --types llama,jamba  # a few
    .venv/bin/python benchmarks/architectures.py --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from fuzzkv.backends.hf.paths import sensitise  # noqa: E402
from fuzzkv.models import shrink as hf_shrink

INIT_STD = 0.2  # the registry's init_std
# float32 rounding moves a decode step's logits by ~1e-6 x their scale; past this, recheck in float64, where
# a correct cache agrees to ~1e-12 and a real divergence stays.
SUSPICIOUS = 2e-5


def measure(model_type: str) -> dict:
    """One row of the table."""
    family, reason = hf_shrink.kind(model_type)
    row = {"model_type": model_type, "kind": family, "builds": False, "reason": reason, "features": "",
           "params": None, "logit_std": None, "diff": None, "diff64": None, "seconds": 0.0}
    if family != "decoder-only":
        return row
    start = time.perf_counter()
    try:
        tiny = hf_shrink.tiny_config(model_type)
    except hf_shrink.CannotBuild as exc:
        row.update(reason=str(exc), seconds=time.perf_counter() - start)
        return row
    row.update(builds=True, features=",".join(hf_shrink.features(tiny)), seconds=time.perf_counter() - start)
    row.update(sensitised(tiny))
    return row


def sensitised(tiny: dict) -> dict:
    """Logit scale and cached-vs-uncached difference with the fuzzer's weights."""
    torch.manual_seed(0)
    model = hf_shrink.build(tiny)
    sensitise(model, INIT_STD)
    try:
        step, full = hf_shrink.decode_step_logits(model)
    except Exception as exc:  # noqa: BLE001 - sensitised weights broke a model that ran with its own init
        return {"reason": f"with sensitised weights: {hf_shrink._first_line(exc)}"}
    scale, diff = float(full.float().std()), float((step - full).abs().max())
    return {"params": sum(p.numel() for p in model.parameters()), "logit_std": scale, "diff": diff,
            "diff64": in_float64(model) if not diff < SUSPICIOUS * max(1.0, scale) else None}


def in_float64(model) -> float | str:
    """The decode step's |cached - uncached| in float64, or why the model cannot run in it."""
    with contextlib.suppress(ValueError):  # a model without experts
        model.set_experts_implementation("eager")  # MoE's grouped_mm has no float64 kernel on the CPU
    try:
        return hf_shrink.cached_vs_uncached(model.double())
    except Exception as exc:  # noqa: BLE001 - e.g. a kernel without float64 (MoE grouped_mm on the CPU)
        return f"n/a ({hf_shrink._first_line(exc)[:60]})"


def number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict]) -> None:
    print(f"{'model_type':26} {'kind':15} {'builds':6} {'params':>8} {'logit_std':>9} {'diff':>9} {'s':>5}  features / reason")
    for row in rows:
        detail = row["features"] if row["builds"] else row["reason"]
        if row["builds"] and row["reason"]:
            detail += f"  [{row['reason']}]"
        print(f"{row['model_type']:26} {row['kind']:15} {'yes' if row['builds'] else 'no':6} {number(row['params'], 'd'):>8} "
              f"{number(row['logit_std'], '.3g'):>9} {number(row['diff'], '.2g'):>9} {row['seconds']:5.2f}  {detail}")
    decoders = [r for r in rows if r["kind"] == "decoder-only"]
    built = [r for r in decoders if r["builds"]]
    stds = [r["logit_std"] for r in built if r["logit_std"] is not None and math.isfinite(r["logit_std"])]
    print(f"\n{len(rows)} causal-LM types, {len(decoders)} decoder-only, {len(built)} build at tiny scale "
          f"({100 * len(built) / max(1, len(decoders)):.0f}%)")
    if stds:
        print(f"logit std with sensitised weights: {min(stds):.3g} .. {max(stds):.3g}")
    for row in (r for r in built if r["diff64"] is not None):
        print(f"cached vs uncached: {row['model_type']} max |diff| {row['diff']:.3g} in float32, "
              f"{number(row['diff64'], '.3g') if not isinstance(row['diff64'], str) else row['diff64']} in float64 "
              f"(logit std {number(row['logit_std'], '.3g')})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", help="comma-separated model_types (default: every causal-LM type)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    types = args.types.split(",") if args.types else hf_shrink.causal_lm_types()
    rows = []
    for model_type in types:
        rows.append(measure(model_type))
        print(f"{model_type}: {rows[-1]['builds'] or rows[-1]['reason']}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
