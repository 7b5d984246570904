#!/usr/bin/env python
"""fuzzkv's benchmark (issue #6): throughput, the obvious harness, the floor, bugs, memory, workers.

Run from anywhere with the project's Python::

    python benchmarks/bench.py            # the full run: 4 tiny models + gpt2 at full size (~10 min, 1 core)
    python benchmarks/bench.py --quick    # a smoke run (tiny llama, ~40 s)
    python benchmarks/bench.py --models llama,gpt2 --mid none --cases 10 --seeds 2 --json out.json

What it measures, in one process, on the same seeded stream of cases for every harness:

1. fuzzkv's cases per second: ``fuzzkv.runner.run`` on a ``MemoryStore`` with a fixed
   ``max_examples``, timed from each ``OracleStarted`` to its ``OracleFinished`` event; this
   is everything fuzzkv pays per case (Hypothesis generation, both paths, the comparison,
   targeting, bookkeeping, events), for the ``decode`` oracle and for every default oracle.
2. On fixed case streams (drawn once from ``fuzzkv.strategies.cases`` under
   ``@hypothesis.seed``, left-padded, ``max_new_tokens`` fixed at each ``--lengths`` value):
   the ``decode`` oracle's check, the obvious harness (``generate`` with and then without a
   cache, compare the logits), and the floor: only the forward calls no harness can avoid
   (the prefill chunk(s), the cached decode steps, one teacher-forced forward).
3. fuzzkv's overhead over the floor on the very cases its own search ran.
4. Time to first failure and to a shrunk failure for each known bug in ``tests/broken_models.py``.
5. Peak memory (``ru_maxrss``; ``torch.cuda.max_memory_allocated`` on a GPU), and the scaling
   of ``fuzzkv run --workers N`` when that option exists.
6. Where CUDA is available, one full-size model in bfloat16 on the GPU.

Times are medians over repeats and seeds (the machines are shared and noisy); ratios are
ratios of those medians. Nothing here asserts: a target next to its value says PASS or MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for `tests.broken_models` (and fuzzkv itself when not installed)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402  (after sys.path is set)
from hypothesis import HealthCheck, Phase, Verbosity, given, seed, settings  # noqa: E402

from fuzzkv import events  # noqa: E402
from fuzzkv.backends.hf import paths as hf_paths  # noqa: E402
from fuzzkv.backends.loader import load_lanes  # noqa: E402
from fuzzkv.config import RunConfig  # noqa: E402
from fuzzkv.db import MemoryStore  # noqa: E402
from fuzzkv.oracles import ORACLES  # noqa: E402
from fuzzkv.oracles.check import check  # noqa: E402
from fuzzkv.runner import case_space, library_versions, run  # noqa: E402
from fuzzkv.strategies import cases  # noqa: E402
from fuzzkv.tolerance import calibrate  # noqa: E402

# Targets from issue #6.
TARGET_SPEEDUP = 3.0  # fuzzkv at least this many times faster than the obvious harness ...
TARGET_SPEEDUP_AT = 16  # ... at this max_new_tokens, and growing with it
TARGET_OVERHEAD = 1.5  # fuzzkv's time per case at most this many times the floor (mid-size model)
TARGET_FIRST_FAILURE_S = 30.0  # each known bug found within this many seconds (median, tiny scale)

# The known bugs of tests/broken_models.py and the oracle that finds each (as tests/test_finds_bugs.py runs
# them). Other factories there are faults a run must survive (a model that hangs, one that is flaky, one
# whose construction raises): not bugs to time, and some never finish, so only these are run.
BUG_ORACLES = {"off_by_one_positions": ("decode",), "mask_dropped_when_cached": ("decode",),
               "batch_of_three": ("batch",), "past_long_sequence": ("decode",)}
BUG_BUDGET = 100  # max_examples for a bug run: test_finds_bugs finds each within 60


# -- timing -------------------------------------------------------------------------------------
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


class Clock:
    """perf_counter, synchronising the GPU around what it times when there is one."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self, fn) -> float:
        return self.run(fn)[0]

    def run(self, fn):
        """(seconds, what ``fn`` returned)."""
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        value = fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, value


class Stamped(list):
    """An event sink that keeps (perf_counter, event) pairs."""

    def __call__(self, event):
        self.append((time.perf_counter(), event))

    def of(self, kind):
        return [(t, e) for t, e in self if isinstance(e, kind)]


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


# -- case streams --------------------------------------------------------------------------------
def draw_cases(strategy, n: int, seed_value: int) -> list:
    """The first ``n`` distinct cases Hypothesis generates from ``strategy`` under ``seed_value``:
    the same stream on every run with the same Hypothesis version."""
    drawn: dict = {}

    @seed(seed_value)
    @settings(max_examples=max(3 * n, 10), database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet)
    @given(strategy)
    def collect(case):
        drawn.setdefault(case, None)

    collect()
    return list(drawn)[:n]


def length_stream(lane, config: RunConfig, length: int, n: int, seed_value: int) -> list:
    """``n`` left-padded cases from fuzzkv's own strategy, each generating exactly ``length`` tokens."""
    space = case_space(config, lane)
    limit = space.max_positions - length + 1 if space.max_positions else None  # prompt + length must fit
    space = dataclasses.replace(space, max_new_tokens=length, padding_sides=("left",), max_positions=limit)
    return [dataclasses.replace(c, max_new_tokens=length) for c in draw_cases(cases(space), n, seed_value)]


# -- the three harnesses on one case ------------------------------------------------------------
def fuzzkv_check(lane, case, bounds):
    """What fuzzkv's decode oracle does per case: cached path, one teacher-forced forward, compare."""
    return check(ORACLES["decode"], lane, case, bounds)


OBVIOUS_FALLBACKS: dict = {}  # cache implementation -> cases where generate() could not use it


def obvious_harness(backend, case, tolerance):
    """What a person writes by hand: generate with a cache, generate without, compare the logits."""
    from fuzzkv.backends.hf.backend import MODERN

    model, n = backend.model, case.max_new_tokens
    ids, full_mask = backend.padded(case)
    common = dict(input_ids=ids, attention_mask=full_mask[:, :ids.shape[1]], max_new_tokens=n,
                  min_new_tokens=n, do_sample=False, num_beams=1, output_logits=True, return_dict_in_generate=True,
                  pad_token_id=backend.pad_id)
    # The case's cache implementation, and no auto-compilation (transformers compiles static caches on a GPU).
    extra = {"cache_implementation": case.cache, "disable_compile": True} if MODERN else {}
    try:
        with_cache = model.generate(use_cache=True, **extra, **common)
    except Exception:  # noqa: BLE001 - e.g. generate(cache_implementation="static") raises for Falcon's ALiBi
        OBVIOUS_FALLBACKS[case.cache] = OBVIOUS_FALLBACKS.get(case.cache, 0) + 1
        with_cache = model.generate(use_cache=True, **common)
    without = model.generate(use_cache=False, **common)
    diff = (torch.stack(with_cache.logits, 1).float() - torch.stack(without.logits, 1).float()).abs().max()
    return bool(diff <= tolerance)


class Floor:
    """Only the forward calls no harness can avoid for one case: the prefill chunk(s) and the
    cached decode steps (fed the tokens the cached path chose, so no argmax), and ONE
    teacher-forced uncached forward, each made by fuzzkv's own path code (``hf_paths``)."""

    def __init__(self, backend, case, tokens):
        self.backend, self.case = backend, case
        _, self.mask = backend.padded(case)
        self.tokens = tokens.to(self.mask.device)
        self.spans, start = [], 0
        for size in (*case.prefill_chunks, *[1] * (case.max_new_tokens - 1)):
            self.spans.append((start, size))
            start += size

    def new_cache(self):
        return hf_paths.new_cache(self.backend.model, self.case.cache, self.case.total_length)

    def __call__(self, cache):
        model = self.backend.model
        static_len = self.case.total_length if self.case.cache == "static" else None
        step = hf_paths.CachedForward(model, self.mask, cache, static_len)
        with torch.inference_mode():
            for start, size in self.spans:
                step(self.tokens, start, size)
        hf_paths.reference(model, self.tokens, self.mask)


def time_floor(clock, backend, case, tokens) -> float:
    floor = Floor(backend, case, tokens)
    cache = floor.new_cache()  # built outside the timer: not a forward call
    return clock(lambda: floor(cache))


# -- per model -----------------------------------------------------------------------------------
@contextlib.contextmanager
def recording_cases(backend):
    """Log every (case, greedy tokens) the decode oracle runs through ``backend.cached``."""
    log, original = [], backend.cached

    def cached(case, tokens=None, **options):
        trace = original(case, tokens, **options)
        if tokens is None and not options:
            log.append((case, trace.tokens))
        return trace

    backend.cached = cached
    try:
        yield log
    finally:
        del backend.cached


def search(lanes, config: RunConfig) -> dict:
    """One in-process fuzzkv run on a fresh MemoryStore; search time from the events' timestamps."""
    sink = Stamped()
    started = time.perf_counter()
    finished = run(config, MemoryStore(), sink, lanes)
    wall = time.perf_counter() - started
    begin = [t for t, _ in sink.of(events.OracleStarted)]
    end = [t for t, _ in sink.of(events.OracleFinished)]
    elapsed = sum(b - a for a, b in zip(begin, end))
    return {"examples": finished.examples, "search_s": elapsed, "wall_s": wall, "failures": len(finished.failures),
            "cases_per_s": finished.examples / elapsed if elapsed else None}


def bench_model(name: str, scale: str, args, *, device="cpu", dtype="float32", cases_n: int, seeds: int,
                all_seeds: int) -> dict:
    clock = Clock(device)
    label = f"{name} ({scale}{', ' + dtype + ' on ' + device if device != 'cpu' or dtype != 'float32' else ''})"
    progress(f"{label}: loading")
    started = time.perf_counter()
    base = RunConfig(model=name, scale=scale, device=device, dtype=dtype, db_url="memory:", max_batch=args.max_batch)
    lanes = load_lanes(base)
    lane = lanes.lanes["hf"]
    backend = lane.backends[0]
    load_s = time.perf_counter() - started
    calibrated = calibrate(backend, dtype)  # once; every run below reuses it (as a stored baseline would)
    tolerance, bounds = calibrated.value, calibrated.bounds
    params = sum(p.numel() for p in backend.model.parameters())
    result = {"model": name, "scale": scale, "device": device, "dtype": dtype, "label": label, "params": params,
              "load_s": load_s, "tolerance": tolerance}

    # 1 + 3. fuzzkv's own search: cases per second, and the floor on the very cases it ran. One short
    # untimed search first: Hypothesis's first search in a process pays a one-time setup (~0.25 s).
    search(lanes, dataclasses.replace(base, oracles=("decode",), max_examples=2, seed=10_000, tolerance=tolerance))
    decode_runs = []
    for s in range(seeds):
        progress(f"{label}: decode search, seed {s}")
        config = dataclasses.replace(base, oracles=("decode",), max_examples=cases_n, seed=s, tolerance=tolerance)
        with recording_cases(backend) as ran:
            outcome = search(lanes, config)
        floor = sum(time_floor(clock, backend, case, tokens) for case, tokens in ran)
        outcome.update(floor_s=floor, floor_cases=len(ran), overhead=ratio(outcome["search_s"], floor))
        decode_runs.append(outcome)
    all_runs = []
    for s in range(all_seeds):
        progress(f"{label}: every default oracle, seed {s}")
        config = dataclasses.replace(base, oracles=(), max_examples=cases_n, seed=s, tolerance=tolerance)
        all_runs.append(search(lanes, config))
    result["search"] = {
        "decode": {"runs": decode_runs, "cases_per_s": median(r["cases_per_s"] for r in decode_runs),
                   "s_per_case": median(r["search_s"] / r["examples"] for r in decode_runs if r["examples"]),
                   "floor_s_per_case": median(r["floor_s"] / r["floor_cases"] for r in decode_runs if r["floor_cases"]),
                   "overhead": median(r["overhead"] for r in decode_runs)},
        "all": {"runs": all_runs, "cases_per_s": median(r["cases_per_s"] for r in all_runs)},
    }

    # 2. The same fixed stream through the three harnesses, at each length.
    lengths = []
    for length in args.lengths:
        stream = length_stream(lane, base, length, cases_n, args.stream_seed)
        progress(f"{label}: {len(stream)} cases at max_new_tokens {length}")
        fuzzkv_check(lane, stream[0], bounds)  # warm-up: lazy initialisation is nobody's per-case cost
        obvious_harness(backend, stream[0], tolerance)
        per_case = {"fuzzkv": [], "obvious": [], "floor": []}
        agree = True
        for case in stream:
            times = {k: [] for k in per_case}
            tokens = backend.cached(case).tokens  # what the floor feeds its decode steps
            for r in range(args.repeats):
                order = ("fuzzkv", "obvious", "floor")[r % 3:] + ("fuzzkv", "obvious", "floor")[:r % 3]
                for harness in order:  # rotated, so drift in machine load hits each harness alike
                    if harness == "fuzzkv":
                        seconds, verdict = clock.run(lambda c=case: fuzzkv_check(lane, c, bounds))
                        agree &= not verdict.failed
                    elif harness == "obvious":
                        seconds = clock(lambda c=case: obvious_harness(backend, c, tolerance))
                    else:
                        seconds = time_floor(clock, backend, case, tokens)
                    times[harness].append(seconds)
            for harness, seconds in times.items():
                per_case[harness].append(median(seconds))
        totals = {k: sum(v) for k, v in per_case.items()}
        lengths.append({
            "max_new_tokens": length, "cases": len(stream), "clean": agree,
            "s_per_case": {k: totals[k] / len(stream) for k in totals},
            "cases_per_s": {k: len(stream) / totals[k] for k in totals},
            "speedup_vs_obvious": ratio(totals["obvious"], totals["fuzzkv"]),
            "ceiling_vs_obvious": ratio(totals["obvious"], totals["floor"]),
            "overhead_vs_floor": ratio(totals["fuzzkv"], totals["floor"]),
            "tokens_per_case": statistics.mean(c.total_length * c.batch_size for c in stream),
        })
    result["lengths"] = lengths
    if len(lengths) >= 2:
        lo, hi = lengths[0], lengths[-1]
        span = hi["max_new_tokens"] / lo["max_new_tokens"]
        result["growth_exponent"] = {k: math.log(hi["s_per_case"][k] / lo["s_per_case"][k]) / math.log(span)
                                     for k in ("fuzzkv", "obvious", "floor")}
    result["peak_rss_mb"] = peak_rss_mb()
    if device.startswith("cuda"):
        result["cuda_max_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


# -- 4. deliberately broken models ---------------------------------------------------------------
def broken_factories() -> dict[str, tuple[str, ...]]:
    """The known bugs that tests/broken_models.py defines."""
    module = importlib.import_module("tests.broken_models")
    return {name: oracles for name, oracles in BUG_ORACLES.items() if callable(getattr(module, name, None))}


def bench_bugs(args) -> list[dict]:
    results = []
    for name, oracles in broken_factories().items():
        if args.bugs and name not in args.bugs:
            continue
        runs = []
        for s in range(args.seeds):
            progress(f"bug {name}: seed {s}")
            config = RunConfig(model=f"tests.broken_models:{name}", scale="tiny", oracles=oracles,
                               max_examples=args.bug_budget, seed=s, db_url="memory:")
            sink = Stamped()
            start = time.perf_counter()
            finished = run(config, MemoryStore(), sink, load_lanes(config))
            done = time.perf_counter()
            first_t, first_n = None, None
            for _, done_ev in sink.of(events.OracleFinished):
                if done_ev.first_failure_at is None:
                    continue
                # The ExampleChecked of the first failing case: emitted as its check ends, before shrinking.
                t = next(t for t, ev in sink.of(events.ExampleChecked)
                         if ev.oracle == done_ev.oracle and ev.examples == done_ev.first_failure_at)
                if first_t is None or t < first_t:
                    first_t, first_n = t, done_ev.first_failure_at
            shrunk = [t for t, _ in sink.of(events.FailureFound)]
            search_start = min((t for t, _ in sink.of(events.OracleStarted)), default=start)
            runs.append({"seed": s, "found": bool(finished.failures), "first_failure_at": first_n,
                         "setup_s": search_start - start,
                         "first_failure_s": first_t - start if first_t else None,
                         "shrunk_s": max(shrunk) - start if shrunk else None, "total_s": done - start,
                         "examples": finished.examples,
                         "minimal": [f.verdict.case.describe() for f in finished.failures]})
        results.append({"model": name, "oracles": list(oracles), "runs": runs,
                        "found": sum(r["found"] for r in runs),
                        "first_failure_at": median(r["first_failure_at"] for r in runs),
                        "first_failure_s": median(r["first_failure_s"] for r in runs),
                        "shrunk_s": median(r["shrunk_s"] for r in runs),
                        "setup_s": median(r["setup_s"] for r in runs)})
    return results


# -- 5. workers ----------------------------------------------------------------------------------
# `fuzzkv` in a child Python that reports its own peak RSS and its children's (the workers) on exit. Its own is
# VmHWM (Linux): ru_maxrss would carry over, across exec, the pages it shared with this (large) process.
_FUZZKV_WITH_RSS = """
import atexit, re, resource, sys
def _peaks():
    try:
        own = int(re.search(r"VmHWM:\\s*(\\d+)", open("/proc/self/status").read()).group(1))
    except (OSError, AttributeError):
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sys.stderr.write("\\nBENCH_MAXRSS_KB %d %d\\n" % (own, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
atexit.register(_peaks)
sys.argv[0] = "fuzzkv"
from fuzzkv.cli import main
main()
"""


def fuzzkv_command() -> list[str]:
    return [sys.executable, "-c", _FUZZKV_WITH_RSS]


def bench_workers(args) -> dict:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(args.threads)}
    help_text = subprocess.run([*fuzzkv_command(), "run", "--help"], capture_output=True, text=True, env=env,
                               check=False).stdout
    if not re.search(r"--workers\b", help_text):
        return {"available": False, "reason": "not available: `fuzzkv run --help` lists no --workers option"}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in (1, 2):
            walls, rates, codes, rss = [], [], [], []
            for r in range(args.repeats):
                db = f"sqlite:///{tmp}/workers-{workers}-{r}.db"
                progress(f"fuzzkv run --workers {workers} (repeat {r})")
                start = time.perf_counter()
                proc = subprocess.run([*fuzzkv_command(), "run", "--model", "llama", "--scale", "tiny",
                                       "--max-examples", str(args.worker_examples), "--workers", str(workers),
                                       "--db", db, "--json"], capture_output=True, text=True, env=env, check=False)
                wall = time.perf_counter() - start
                try:  # each worker runs --max-examples per oracle: count what was run, not what was asked
                    examples = json.loads(proc.stdout)["examples"]
                except (ValueError, KeyError, TypeError):
                    examples = None
                found = re.search(r"BENCH_MAXRSS_KB (\d+) (\d+)", proc.stderr)
                rss.append(tuple(int(x) / 1024 for x in found.groups()) if found else (None, None))
                walls.append(wall)
                rates.append(examples / wall if examples else None)
                codes.append(proc.returncode)
            runs.append({"workers": workers, "wall_s": median(walls), "cases_per_s": median(rates),
                         "exit_codes": codes, "main_rss_mb": median(m for m, _ in rss),
                         "worker_rss_mb": median(w for _, w in rss)})
    for r in runs:
        r["speedup"] = ratio(r["cases_per_s"], runs[0]["cases_per_s"])
    return {"available": True, "max_examples": args.worker_examples, "runs": runs}


# -- 6. GPU --------------------------------------------------------------------------------------
def bench_cuda(args) -> dict:
    if not torch.cuda.is_available():
        return {"available": False, "reason": "skipped: CUDA is not available on this machine"}
    if not args.cuda_model:
        return {"available": False, "reason": "skipped: --cuda-model none"}
    torch.cuda.reset_peak_memory_stats()
    result = bench_model(args.cuda_model, "full", args, device="cuda", dtype="bfloat16", cases_n=args.cuda_cases,
                         seeds=1, all_seeds=1)
    return {"available": True, "device": torch.cuda.get_device_name(), **result}


# -- output --------------------------------------------------------------------------------------
def progress(message: str) -> None:
    if not QUIET:
        print(f"  ... {message}", file=sys.stderr, flush=True)


def fmt(value, spec=".3g", none="-"):
    return none if value is None else format(value, spec)


def pass_miss(ok) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def table(headers, rows) -> str:
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(results: dict) -> str:
    out = []
    s = results["settings"]
    out.append(f"fuzzkv benchmark: torch {results['versions'].get('torch')}, transformers "
               f"{results['versions'].get('transformers')}, hypothesis {results['versions'].get('hypothesis')}, "
               f"{s['threads']} thread(s), {s['cases']} cases/stream, {s['seeds']} seed(s), {s['repeats']} repeat(s)")
    models = results["models"] + ([results["cuda"]] if results["cuda"].get("available") else [])

    out.append("\n[1] fuzzkv run throughput (runner.run on a MemoryStore; Hypothesis, both paths, compare, "
               "bookkeeping; median over seeds)")
    out.append(table(
        ["model", "params", "decode cases/s", "decode s/case", "floor s/case", "fuzzkv/floor", "all oracles cases/s",
         f"target <= {TARGET_OVERHEAD}x floor"],
        [[m["label"], f"{m['params'] / 1e6:.3g}M", fmt(m["search"]["decode"]["cases_per_s"], ".1f"),
          fmt(m["search"]["decode"]["s_per_case"], ".4f"), fmt(m["search"]["decode"]["floor_s_per_case"], ".4f"),
          fmt(m["search"]["decode"]["overhead"], ".2f") + "x", fmt(m["search"]["all"]["cases_per_s"], ".1f"),
          pass_miss(m["search"]["decode"]["overhead"] <= TARGET_OVERHEAD) if m.get("mid") else ""]
         for m in models]))

    out.append("\n[2] the same seeded case stream through each harness (decode oracle check vs generate() with "
               "and without a cache vs the floor; s per case, median of repeats)")
    rows = []
    for m in models:
        for r in m["lengths"]:
            at_target = r["max_new_tokens"] == TARGET_SPEEDUP_AT
            rows.append([m["label"], r["max_new_tokens"], r["cases"], fmt(r["s_per_case"]["fuzzkv"], ".4f"),
                         fmt(r["s_per_case"]["obvious"], ".4f"), fmt(r["s_per_case"]["floor"], ".4f"),
                         fmt(r["speedup_vs_obvious"], ".2f") + "x", fmt(r["ceiling_vs_obvious"], ".2f") + "x",
                         fmt(r["overhead_vs_floor"], ".2f") + "x",
                         pass_miss(r["speedup_vs_obvious"] >= TARGET_SPEEDUP) if at_target else ""])
        if "growth_exponent" in m:
            g = m["growth_exponent"]
            first, last = m["lengths"][0], m["lengths"][-1]
            grows = last["speedup_vs_obvious"] > first["speedup_vs_obvious"]
            rows.append(["", "time ~ L^k", "", f"k={g['fuzzkv']:.2f}", f"k={g['obvious']:.2f}", f"k={g['floor']:.2f}",
                         "grows" if grows else "flat", "", "", pass_miss(grows)])
    target = f"target >= {TARGET_SPEEDUP:g}x at {TARGET_SPEEDUP_AT}, growing"
    out.append(table(["model", "new tokens", "cases", "fuzzkv", "obvious", "floor", "obvious/fuzzkv",
                      "obvious/floor", "fuzzkv/floor", target], rows))
    out.append("  obvious/floor is the ceiling of obvious/fuzzkv: no harness that runs the forward calls of the "
               "floor can beat it.")
    if results.get("obvious_fallbacks"):
        out.append(f"  generate() could not run these cache implementations, so the obvious harness used its default "
                   f"cache there: {results['obvious_fallbacks']}")

    out.append(f"\n[3] deliberately broken models (tests/broken_models.py, tiny llama; median over {s['seeds']} "
               f"seed(s); seconds from the run() call, model load and calibration included)")
    out.append(table(
        ["broken model", "oracle", "found", "1st failure at example", "setup s", "1st failure s", "shrunk s",
         f"target < {TARGET_FIRST_FAILURE_S:g}s"],
        [[b["model"], ",".join(b["oracles"]), f"{b['found']}/{len(b['runs'])}", fmt(b["first_failure_at"], "g"),
          fmt(b["setup_s"], ".2f"), fmt(b["first_failure_s"], ".2f"), fmt(b["shrunk_s"], ".2f"),
          pass_miss(b["first_failure_s"] is not None and b["first_failure_s"] < TARGET_FIRST_FAILURE_S
                  and b["found"] == len(b["runs"]))]
         for b in results["bugs"]]) if results["bugs"] else "  (skipped)")

    out.append("\n[4] memory (peak resident set of this process after each model, cumulative)")
    rows = [[m["label"], f"{m['peak_rss_mb']:.0f} MB",
             f"{m['cuda_max_memory_mb']:.0f} MB" if "cuda_max_memory_mb" in m else "-"] for m in models]
    out.append(table(["after model", "ru_maxrss", "cuda max allocated"], rows))

    w = results["workers"]
    out.append("\n[5] fuzzkv run --workers N (subprocess, llama tiny)")
    if not w.get("available"):
        out.append(f"  {w['reason']}")
    else:
        out.append(f"  fuzzkv run --model llama --scale tiny --max-examples {w['max_examples']} --workers N "
                   "(every default oracle; wall time includes start-up, model load and calibration)")
        out.append(table(["workers", "wall s", "cases/s", "throughput vs 1 worker", "exit codes", "peak RSS: fuzzkv",
                          "largest child"],
                         [[r["workers"], fmt(r["wall_s"], ".2f"), fmt(r["cases_per_s"], ".1f"),
                           fmt(r["speedup"], ".2f") + "x", ",".join(map(str, r["exit_codes"])),
                           fmt(r["main_rss_mb"], ".0f") + " MB", fmt(r["worker_rss_mb"], ".0f") + " MB"]
                          for r in w["runs"]]))

    c = results["cuda"]
    out.append("\n[6] GPU, full-size model in bfloat16")
    out.append(f"  {c['reason']}" if not c.get("available") else f"  {c['device']}: see the {c['label']} rows above")
    out.append(f"\ntotal benchmark time {results['elapsed_s']:.0f} s")
    return "\n".join(out)


QUIET = False


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a tiny smoke run: llama tiny, 3 cases, 1 seed, 1 bug")
    p.add_argument("--models", default="llama,gpt2,bloom-560m,gemma-2-2b",
                   help="comma-separated registry models run at --scale tiny")
    p.add_argument("--mid", default="gpt2", help="the mid-size model, run at --scale full ('none' to skip)")
    p.add_argument("--cases", type=int, default=16, help="cases per stream and max_examples per search (tiny models)")
    p.add_argument("--mid-cases", type=int, default=4, help="the same for the mid-size model")
    p.add_argument("--seeds", type=int, default=3, help="seeds per search and per broken model")
    p.add_argument("--repeats", type=int, default=3, help="timings per case on the fixed streams")
    p.add_argument("--lengths", default="8,16,32", help="max_new_tokens of the fixed streams")
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--stream-seed", type=int, default=0, help="Hypothesis seed of the fixed streams")
    p.add_argument("--bugs", default=None,
                   help="comma-separated known bugs of tests/broken_models.py (default all four; 'none' skips)")
    p.add_argument("--bug-budget", type=int, default=BUG_BUDGET, help="max_examples of a broken-model run")
    p.add_argument("--worker-examples", type=int, default=30, help="--max-examples of the --workers runs")
    p.add_argument("--cuda-model", default="llama", help="full-size model for the GPU section ('none' to skip)")
    p.add_argument("--cuda-cases", type=int, default=8)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: shared machines)")
    p.add_argument("--json", dest="json_path", help="also write the results as JSON to this path")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.mid, args.cases, args.seeds, args.repeats = "llama", "none", 3, 1, 1
        args.lengths, args.bugs, args.bug_budget, args.worker_examples = "8,16", "off_by_one_positions", 40, 1
        args.cuda_cases = 2
    args.models = [m for m in args.models.split(",") if m and m != "none"]
    args.mid = None if args.mid in ("", "none") else args.mid
    args.cuda_model = None if args.cuda_model in ("", "none") else args.cuda_model
    args.lengths = [int(x) for x in args.lengths.split(",") if x]
    args.bugs = None if args.bugs is None else [b for b in args.bugs.split(",") if b and b != "none"] or ["none"]
    return args


def main(argv=None) -> int:
    global QUIET
    args = parse_args(argv)
    QUIET = args.quiet
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results = {"settings": {**{k: v for k, v in vars(args).items() if k != "json_path"}},
               "versions": library_versions(), "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
               "targets": {"speedup_vs_obvious": TARGET_SPEEDUP, "at_max_new_tokens": TARGET_SPEEDUP_AT,
                           "overhead_vs_floor_mid": TARGET_OVERHEAD, "first_failure_s": TARGET_FIRST_FAILURE_S},
               "models": []}

    def save():  # after every section: a long run stopped halfway keeps what it measured
        results["obvious_fallbacks"] = dict(OBVIOUS_FALLBACKS)
        results["elapsed_s"] = time.perf_counter() - started
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(results, indent=2, default=str))

    for name in args.models:
        results["models"].append(bench_model(name, "tiny", args, cases_n=args.cases, seeds=args.seeds,
                                             all_seeds=args.seeds))
        save()
    if args.mid:
        mid = bench_model(args.mid, "full", args, cases_n=args.mid_cases, seeds=args.seeds, all_seeds=1)
        mid["mid"] = True
        results["models"].append(mid)
        save()
    results["bugs"] = [] if args.bugs == ["none"] else bench_bugs(args)
    save()
    results["workers"] = bench_workers(args)
    results["cuda"] = bench_cuda(args)
    save()
    print(report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
