"""Full-size models: build time and a run's peak memory against the weights it holds (issue #16's figures).

    python benchmarks/memory.py            # bloom-560m build time, llama (1.1B) bf16 peak memory: minutes on a CPU
    python benchmarks/memory.py --quick    # build time only
    python benchmarks/memory.py --mistral  # also a whole run of the full mistral-7b (7B) in bf16: hours on 2 cores

Each figure is printed beside its goal. The peak is the ``Maximum resident set size`` ``/usr/bin/time -v``
reports for a whole ``fuzzkv run --scale full`` in a fresh process; the weights are the model's parameter bytes
in the run's dtype. Never a timed test: run it by hand and record its output with date and machine.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PEAK_GOAL_EXTRA_GB = 1.5  # the goal: peak < 2 x weights + 1.5 GB (activations, the interpreter, torch)
BUILD_GOAL_SPEEDUP = 4.0  # the goal: the full-size random build at least 4x faster than before #16


# How fuzzkv built a full-size random model before #16 (commit 5bd8b90): transformers' construction with its
# default init (torch's and then transformers' own), then a redraw of every parameter. hf_paths is standalone, so
# that commit's own file is imported as it was.
BEFORE = "5bd8b90"
WHOLE_BUILD = ("import importlib.util, subprocess, tempfile\n"
               f"source = subprocess.run(['git', 'show', '{BEFORE}:fuzzkv/backends/hf/paths.py'], capture_output=True,"
               " text=True, check=True).stdout\n"
               "path = tempfile.mkdtemp() + '/hf_paths_before.py'\n"
               "open(path, 'w').write(source)\n"
               "spec = importlib.util.spec_from_file_location('hf_paths_before', path)\n"
               "before = importlib.util.module_from_spec(spec)\n"
               "spec.loader.exec_module(before)\n"
               "from fuzzkv import registry\n"
               "def build(name):\n"
               "    return before.random_model(registry.get(name).config_for('full'), 0, 0.2, 'eager')\n")
FUZZKV_BUILD = ("from fuzzkv.backends import hf_loading\n"
                "def build(name):\n"
                "    return hf_loading.load_model(name, scale='full', seed=0, init_std=0.2, attn='eager').model\n")


def build_seconds(model: str, builder: str = FUZZKV_BUILD) -> tuple[float, int]:
    """Seconds to build the full-size random ``model`` in a fresh process (imports excluded), and its parameter
    count; ``builder`` defines ``build(name)``."""
    code = (f"{builder}import time\n"
            "started = time.monotonic()\n"
            f"model = build({model!r})\n"
            "print(time.monotonic() - started, sum(p.numel() for p in model.parameters()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    seconds, params = out.stdout.split()[-2:]
    return float(seconds), int(params)


def peak_of_run(model: str, dtype: str, examples: int, oracles: tuple[str, ...]) -> tuple[float, float, int]:
    """(peak RSS in GB, wall seconds, exit code) of a full-size run in a fresh process (``oracles``: the default set
    when empty)."""
    with tempfile.TemporaryDirectory() as tmp:
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "fuzzkv", "run", "--model", model, "--scale", "full",
                   "--dtype", dtype, "--max-examples", str(examples), "--db", f"sqlite:///{tmp}/bench.db",
                   *(option for oracle in oracles for option in ("--oracle", oracle))]
        started = time.monotonic()
        out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
        peak = int(found.group(1)) * 1024 / 1e9 if found else float("nan")
        return peak, time.monotonic() - started, out.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the build time only")
    parser.add_argument("--oracle", action="append", default=[],
                        help="the peak run's oracles (repeatable; default: the default set, as issue #16 states it)")
    parser.add_argument("--mistral", action="store_true", help="also a whole run of the full mistral-7b in bfloat16 (hours)")
    args = parser.parse_args()
    before, _ = build_seconds("bloom-560m", WHOLE_BUILD)
    seconds, params = build_seconds("bloom-560m")
    ratio = before / seconds
    print(f"build: full-size random bloom-560m ({params / 1e6:.0f}M parameters) in {seconds:.1f} s; as commit "
          f"{BEFORE} built it (construction, default init, redraw) in {before:.1f} s: {ratio:.1f}x faster "
          f"(goal: {BUILD_GOAL_SPEEDUP:.0f}x): {'MET' if ratio >= BUILD_GOAL_SPEEDUP else 'NOT MET'}")
    if args.quick:
        return
    for model in ["llama", *(["mistral-7b"] if args.mistral else [])]:
        print(peak_line(model, tuple(args.oracle)), flush=True)
    print(probe_line("mistral-7b"), flush=True)
    if not args.mistral:
        print("mistral-7b full bfloat16, a whole run: not run (--mistral: hours on a 2-core CPU; the goal is that it "
              "completes on a 24 GB machine)")
    print("GPU section: benchmarks/gpu.py, on a lent device (it says so and does nothing without CUDA)")


def peak_line(model: str, oracles: tuple[str, ...]) -> str:
    """One full-size bfloat16 run of ``model``, 3 examples: its peak against 2 x its weights + 1.5 GB."""
    weights = parameter_count(model) * BYTES["bfloat16"] / 1e9
    peak, wall, code = peak_of_run(model, "bfloat16", 3, oracles)
    goal = 2 * weights + PEAK_GOAL_EXTRA_GB
    which = ", ".join(oracles) or "the default oracles"
    met = peak < goal and code in (0, 1)  # completed: clean, or with findings
    return (f"peak: {model} full bfloat16, 3 examples of {which}: {peak:.1f} GB for {weights:.1f} GB of weights "
            f"({peak / weights:.1f}x), {wall:.0f} s, exit {code} (goal: completes, under {goal:.1f} GB = 2 x weights + "
            f"{PEAK_GOAL_EXTRA_GB} GB): {'MET' if met else 'NOT MET'}")


# One cached decode against one uncached pass of a full-size model in bfloat16, then the same in its float32 precise
# twin: the memory a run holds at its peak (weights, twin, activations) without the hours of a whole run on a CPU.
PROBE = """
import time, torch
from fuzzkv.backends import precision
from fuzzkv.models import loading as hf_loading
from fuzzkv.backends.hf import paths as hf_paths
started = time.monotonic()
model = hf_loading.load_model({model!r}, scale="full", seed=0, init_std=0.2, attn="eager", dtype="bfloat16").model
model = hf_paths.place(model, "cpu", "bfloat16")
print(f"built in {{time.monotonic() - started:.0f}} s")
case = {{"prompts": [[5, 6, 7, 8]], "padding_side": "left", "max_new_tokens": 2, "prefill_chunks": [4],
         "cache": "dynamic", "dtype": "bfloat16", "reuse_batch": 0, "continuation": [], "settings": {{}}}}
for name, subject in (("bfloat16", model), ("float32 twin", precision.twin(model, torch.float32))):
    tokens, mask, cached = hf_paths.cached(subject, case, 0, "cpu")
    with torch.inference_mode():
        reference = hf_paths.reference(subject, tokens, mask)
    print(f"{{name}}: cached vs uncached max |difference| {{float((cached.float() - reference.float()).abs().max()):.3g}}")
"""


def probe_line(model: str) -> str:
    """The probe above for ``model``, in a fresh process: its peak against 2 x its bf16 weights + 1.5 GB."""
    weights = parameter_count(model) * BYTES["bfloat16"] / 1e9
    command = ["/usr/bin/time", "-v", sys.executable, "-c", PROBE.format(model=model)]
    started = time.monotonic()
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    peak = int(found.group(1)) * 1024 / 1e9 if found else float("nan")
    goal = 2 * weights + PEAK_GOAL_EXTRA_GB
    said = "; ".join(out.stdout.split("\n")[:3]).strip("; ")
    return (f"probe: {model} full bfloat16 ({said}): peak {peak:.1f} GB for {weights:.1f} GB of weights "
            f"({peak / weights:.2f}x), {time.monotonic() - started:.0f} s, exit {out.returncode} (goal: under "
            f"{goal:.1f} GB): {'MET' if peak < goal and out.returncode == 0 else 'NOT MET'}")


def parameter_count(model: str) -> int:
    """Parameters of the full-size registry ``model``, counted on the meta device (nothing built)."""
    code = ("from fuzzkv import registry\nfrom fuzzkv.backends import hf_loading\n"
            f"print(hf_loading.parameter_count(registry.get({model!r}).config_for('full')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return int(out.stdout.split()[-1])


if __name__ == "__main__":
    main()
