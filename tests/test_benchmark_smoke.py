"""The benchmark script runs end to end at its smallest size.

A smoke test only: it checks the table is printed and the JSON is written, never a
duration or a ratio (benchmarks are not timed tests; their numbers live in the report).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


@pytest.mark.slow
def test_quick_benchmark_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--quiet", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    for section in ("[1] fuzzkv run throughput", "[2] the same seeded case stream", "[3] deliberately broken models",
                    "[4] memory", "[5] fuzzkv run --workers N", "[6] GPU"):
        assert section in text
    assert "llama (tiny)" in text and "off_by_one_positions" in text
    assert "PASS" in text or "MISS" in text  # targets are printed beside the values, whatever they are

    results = json.loads(out.read_text())
    [model] = results["models"]
    assert model["model"] == "llama" and model["scale"] == "tiny"
    assert [r["max_new_tokens"] for r in model["lengths"]] == [8, 16]
    for row in model["lengths"]:
        assert set(row["s_per_case"]) == {"fuzzkv", "obvious", "floor"}
        assert row["clean"] is True  # the clean tiny llama passes the decode oracle on every case
    assert model["search"]["decode"]["runs"][0]["examples"] > 0
    [bug] = results["bugs"]
    assert bug["model"] == "off_by_one_positions" and bug["found"] == 1
    assert "available" in results["workers"] and "available" in results["cuda"]
    assert results["versions"]["torch"]


def test_the_surfaces_benchmark_tallies_every_case_by_what_failed(tmp_path):
    out = tmp_path / "surfaces.jsonl"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "surfaces.py"
    proc = subprocess.run([sys.executable, str(script), "--models", "llama,gemma-2-2b", "--oracles", "beam,quantized",
                           "--examples", "3", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["model"], r["oracle"]) for r in rows] == [("llama", "beam"), ("llama", "quantized"),
                                                         ("gemma-2-2b", "beam"), ("gemma-2-2b", "quantized")]
    assert sum(rows[0]["tally"].values()) == 3  # every drawn case counted, pass or not
    assert "sliding" in rows[3]["not_applicable"]  # transformers refuses a QuantizedCache for sliding layers
