"""Old TransformerLens (2.x, HookedTransformer API): fuzzkv finds the real Bloom cache bug.

TransformerLens before PR #777 (November 2024) sliced Bloom's ALiBi bias by query rows, so a
cached decode step ran with no ALiBi at all. These tests run only where such a version is
installed: `.ci/run` builds a second environment with transformers 4.46 and TransformerLens
2.8.1 for them.
"""

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import transformers

from tests.known_bugs import tl_generate_ignores_padding

ROOT = Path(__file__).resolve().parent.parent
TL = metadata.version("transformer-lens")
TL_RELEASE = tuple(int(part) for part in TL.split(".")[:2])
pytestmark = pytest.mark.skipif(int(TL.split(".")[0]) >= 4, reason=f"TransformerLens {TL} has the fix; needs 2.x")
# (this environment also has transformers 4.46: the HF backend's dynamic-cache oracles run there too)


def fuzzkv(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fuzzkv", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)


@pytest.mark.skipif(TL_RELEASE >= (2, 9), reason=f"TransformerLens {TL} has the fix (PR #777; 2.9.1 checked)")
def test_old_transformerlens_bloom_cache_bug_is_found_and_shrunk(tmp_path):
    # Unpadded batches: the Bloom bug alone (padded ones also meet the attention-mask bug below).
    result = fuzzkv("run", "--model", "bloom-560m", "--backend", "tl", "--scale", "tiny", "--oracle", "tl-decode",
                    "--max-examples", "40", "--max-batch", "1", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json",
                    cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert "HookedTransformer" in data["backend"]
    [failure] = data["failures"]
    assert failure["oracle"] == "tl-decode" and failure["kind"] == "mismatch"
    # The uncached path agrees with HF; the first cached decode step is where it breaks.
    assert failure["case"]["prompts"] == [[0]] and failure["case"]["max_new_tokens"] == 2
    assert failure["metrics"]["first_bad_position"] == 1
    assert failure["max_abs_diff"] > 0.05 and failure["tolerance"] < 1e-3


@pytest.mark.skipif(TL_RELEASE < (2, 9), reason=f"TransformerLens {TL}: its real Bloom bug is the one found (above)")
def test_a_planted_hookedtransformer_bug_is_found_and_its_script_reproduces_it(tmp_path):
    # tests/broken_tl.py scales the attention scores of every cached call by 1.25 on the TransformerLens side.
    # One row per case: on 2.13-3.0, a padded batch's generate() meets a real bug of its own (the next tests).
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = fuzzkv("run", "--model", "tests.broken_tl:make", "--backend", "tl", "--oracle", "tl-decode",
                    "--max-examples", "40", "--max-batch", "1", "--db", db, "--json", cwd=ROOT)
    assert result.returncode == 1, result.stderr
    [failure] = json.loads(result.stdout)["failures"]
    assert failure["backend"] == "tl" and failure["kind"] == "mismatch"
    # One token and two new: the first cached call is the first that attends to a cached key.
    assert failure["case"]["prompts"] == [[0]] and failure["case"]["max_new_tokens"] == 2
    script = tmp_path / "repro.py"
    script.write_text(failure["reproduction"])
    repro = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert repro.returncode == 1 and "FAILS" in repro.stdout, repro.stdout + repro.stderr[-2000:]


GENERATE_VS_ALONE = "generate(use_past_kv_cache=True) vs each prompt alone"


@pytest.mark.skipif(not tl_generate_ignores_padding(), reason=f"TransformerLens {TL}'s generate() masks the padding")
def test_generate_attending_to_a_padded_batchs_padding_is_found_and_shrunk(tmp_path):
    # TransformerLens 2.13-3.0 build generate()'s mask from a tensor of zeros (TransformerLens #1005, fixed in 3.1):
    # tl-decode runs generate() on the padded batch whole where TransformerLens infers the padding itself.
    result = fuzzkv("run", "--model", "llama", "--backend", "tl", "--scale", "tiny", "--oracle", "tl-decode",
                    "--max-examples", "60", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    [failure] = json.loads(result.stdout)["failures"]
    assert failure["kind"] == "mismatch" and failure["comparison"] == GENERATE_VS_ALONE
    case = failure["case"]
    assert case["settings"] == {"padding_mode": "inferred"} and case["max_new_tokens"] == 1
    assert sorted(len(prompt) for prompt in case["prompts"]) == [1, 2]  # two rows, one padded by one token
    script = tmp_path / "repro.py"
    script.write_text(failure["reproduction"])
    repro = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                           timeout=300)
    assert repro.returncode == 1 and f"{GENERATE_VS_ALONE}, uncached: max" in repro.stdout, repro.stdout


# Architectures a release converts to fixed sizes whatever the config says: (model, TransformerLens minor) -> the
# sizes. A tiny model of them is unsupported there (the full-size one builds).
FIXED_SIZES = {("mistral-7b", (2, 3)): "d_model 4096, n_layers 32"}


@pytest.mark.parametrize("model", ["llama", "pythia-70m", "mistral-7b"])
def test_old_transformerlens_runs_clean_where_it_has_no_bug(model, tmp_path):
    if (model, TL_RELEASE) in FIXED_SIZES:
        result = fuzzkv("run", "--model", model, "--backend", "tl", "--scale", "tiny", "--max-examples", "5",
                        "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
        assert result.returncode == 5, result.stdout + result.stderr  # nothing tested, said so
        assert f"to fixed sizes ({FIXED_SIZES[model, TL_RELEASE]}" in result.stdout
        return
    # Unpadded batches: before 2.9, padded ones (and the batch oracle's) meet the attention-mask bug (next test).
    result = fuzzkv("run", "--model", model, "--backend", "tl", "--scale", "tiny", "--max-examples", "25",
                    "--oracle", "chunked", "--oracle", "tl-decode", "--max-batch", "1",
                    "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no failures in" in result.stdout


@pytest.mark.skipif(TL_RELEASE >= (2, 9), reason=f"TransformerLens {TL} has the fix (PR #772, in 2.9.0)")
def test_an_attention_mask_passed_with_a_cache_is_found_before_2_9(tmp_path):
    # HookedTransformer stores only an inferred mask in its cache, never one passed explicitly: the next cached
    # call fails (TransformerLens PR #772, "attention_mask and past_kv_cache cannot work together", fixed in 2.9.0).
    result = fuzzkv("run", "--model", "llama", "--backend", "tl", "--scale", "tiny", "--oracle", "tl-decode",
                    "--max-examples", "40", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    [failure] = json.loads(result.stdout)["failures"]
    assert failure["kind"] == "error" and "RuntimeError" in failure["summary"]
    case = failure["case"]
    assert len(case["prompts"]) == 2 and len({len(p) for p in case["prompts"]}) == 2  # shrunk to one padded row


@pytest.mark.skipif(TL_RELEASE >= (3, 0), reason=f"the script drives 2.x's HookedTransformerKeyValueCache ({TL})")
def test_the_attention_mask_finding_script_exits_1_exactly_before_2_9(tmp_path):
    script = ROOT / "findings" / "transformerlens-attention-mask-with-cache-before-2-9.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == (1 if TL_RELEASE < (2, 9) else 0), result.stdout + result.stderr[-2000:]


def test_a_configuration_old_transformerlens_cannot_convert_is_unsupported_not_a_crash(tmp_path):
    # TransformerLens 2.8.1 assumes GPT-2's MLP is 4x wide; the tiny GPT-2 sets n_inner.
    result = fuzzkv("run", "--model", "gpt2", "--backend", "tl", "--scale", "tiny", "--max-examples", "5",
                    "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert result.returncode == 5, result.stderr  # the only lane asked for is unsupported: nothing was tested
    assert result.stdout.count(f"unsupported by backend tl: TransformerLens {TL} cannot build GPT2LMHeadModel") == 1


@pytest.mark.skipif(not transformers.__version__.startswith("4."), reason="transformers 5.x: tests/test_clean_models.py")
@pytest.mark.parametrize("model", ["llama", "bloom-560m", "gpt2", "falcon-rw", "mpt"])
def test_fuzzkv_runs_clean_on_transformers_4(model, tmp_path):
    from tests.known_bugs import known_on_4, reset_keeps_keys_reason

    # Where this release has a known failure of an oracle's path (a static cache, DynamicCache's reset()), the other
    # oracles must still be clean.
    known = {**known_on_4(model), "cache-reuse": reset_keeps_keys_reason()}
    if "cache-impl" in known:
        # The release's static cache itself is broken for this model, and every cached oracle draws it.
        pytest.skip(f"{model}: {known['cache-impl']}")
    run = [name for name in ("decode", "batch", "chunked", "cache-impl", "cache-reuse", "generate") if not known.get(name)]
    oracles = [flag for name in run for flag in ("--oracle", name)] if any(known.values()) else []
    result = fuzzkv("run", "--model", model, "--scale", "tiny", "--max-examples", "25", *oracles,
                    "--db", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no failures in" in result.stdout


def test_an_architecture_converted_only_by_official_name_is_fuzzed_from_its_released_config(tmp_path):
    # TransformerLens 2.3.0 converts Gemma-2 only from the names google/gemma-2-2b, -9b, -27b, each with hard-coded
    # sizes, and the full-size pair does not fit this machine's memory: both sides are built from google/gemma-2-2b's
    # released config with only its depth and vocabulary shrunk (issue #34), and the header says so. On 2.3.0 the
    # cross oracle finds that release's wrong Gemma-2 attention scale
    # (findings/transformerlens-gemma2-attention-scale-2-3-0.md).
    from fuzzkv import registry
    from fuzzkv.backends.tl import hooked_paths as tl_legacy_paths

    def config(scale):
        values = {k: v for k, v in registry.get("gemma-2-2b").config_for(scale).items() if k != "model_type"}
        return transformers.Gemma2Config(**{**values, "architectures": ["Gemma2ForCausalLM"]})

    full, tiny = config("full"), config("tiny")
    try:
        assert tl_legacy_paths.official_name_of_same_size(full) == "google/gemma-2-2b"
    except NotImplementedError as exc:
        pytest.skip(f"TransformerLens {TL} knows no Gemma-2 by official name offline: {exc}")
    import transformer_lens.loading_from_pretrained as loading

    tiny.save_pretrained(tmp_path)
    try:
        loading.convert_hf_model_config(str(tmp_path))
        pytest.skip(f"TransformerLens {TL} converts Gemma-2 from its config too (the clean runs cover it)")
    except NotImplementedError:
        pass
    with pytest.raises(NotImplementedError, match="only from official names.*gemma-2-2b.*none has d_model 64"):
        tl_legacy_paths.official_name_of_same_size(tiny)
    # A fixed tolerance: the released width (2304) makes calibration take minutes on a CPU.
    result = fuzzkv("run", "--model", "gemma-2-2b", "--backend", "both", "--scale", "tiny", "--oracle", "cross",
                    "--max-examples", "5", "--tolerance", "0.001", "--json", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                    cwd=tmp_path)
    run = json.loads(result.stdout)
    assert run["oracles"]["cross@cross"]["examples"] >= 1, result.stderr[-3000:]  # tested: never exit 5
    assert ("google/gemma-2-2b's released config, kept but for num_hidden_layers 26 -> 2, vocab_size 256000 -> 512, "
            f"as TransformerLens {TL} builds Gemma2ForCausalLM only from its official configs") in run["model_source"]
    if TL_RELEASE == (2, 3):
        assert result.returncode == 1, result.stderr[-3000:]
        [found] = run["failures"]
        # Far past the fixed tolerance (float32 rounding between the two is ~1e-5 here).
        assert found["kind"] == "mismatch" and found["backend"] == "cross" and found["max_abs_diff"] > 10 * 0.001


def test_padding_inferred_from_the_pad_token_is_its_own_mode():
    # TransformerLens infers a padded batch's mask from the pad token when none is passed, and stores it in its
    # cache, in every 2.x/3.x release (before 2.9 a mask passed explicitly is not stored: the finding above).
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.case import Case
    from fuzzkv.config import RunConfig
    from fuzzkv.oracles import ORACLES
    from fuzzkv.oracles.check import check
    from fuzzkv.verdict import Bounds

    lane = load_lanes(RunConfig(model="llama", backend="tl", scale="tiny", db_url="memory:")).lanes["tl"]
    assert lane.capabilities.padding_modes == ("explicit", "inferred")
    bounds = Bounds(1e-3, 1e-3)  # tiny float32: rounding ~1e-5

    def verdict(prompts, mode):
        return check(ORACLES["tl-decode"], lane, Case(prompts=prompts, max_new_tokens=3,
                                                      settings={"padding_mode": mode}), bounds)

    padded = ((3, 4, 5, 7), (6, 9), (8,))
    inferred = verdict(padded, "inferred")  # generate() runs on the padded batch whole in this mode
    if tl_generate_ignores_padding():  # 2.13 <= TL < 3.1: generate() attends to the padding (a finding)
        assert inferred.kind == "mismatch" and inferred.comparison == GENERATE_VS_ALONE
        assert inferred.metrics.max_abs_diff > 1.0
    else:
        assert inferred.kind == "pass"
    assert verdict(padded, "explicit").kind == ("pass" if TL_RELEASE >= (2, 9) else "error")
    # A real first token equal to the pad token reads as padding in this mode: not applicable, never a finding.
    pad = lane.subject.pad_id
    misread = verdict(((pad, 4, 5), (6,)), "inferred")
    assert misread.kind == "refused" and "reads leading padding" in misread.error
