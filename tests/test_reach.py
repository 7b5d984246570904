"""Reach: any causal-LM architecture of the installed transformers by name, its generic tiny twin, drawn
continuations, oracles that do not apply said with why, and planted bugs in the parts only that reach
exercises (a norm weight, a recurrent state). Real transformers models, tiny."""

from __future__ import annotations

import pytest

from fuzzkv.case import Case
from fuzzkv.errors import NotFuzzable, UsageError
from tests.conftest import fuzz

modern = pytest.mark.skipif(__import__("transformers").__version__.startswith("4."),
                            reason="the generic architectures are driven through transformers 5.x caches")


@modern
def test_a_model_type_and_its_class_name_both_fuzz_the_generic_tiny_twin():
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig

    for name in ("qwen3", "Qwen3ForCausalLM"):
        lanes = load_lanes(RunConfig(model=name, scale="tiny", db_url="memory:"))
        info = lanes.info
        assert (info.name, info.model_type, info.architecture) == ("qwen3", "qwen3", "Qwen3ForCausalLM")
        assert "tiny twin of transformers' Qwen3ForCausalLM defaults" in info.source


@modern
def test_a_full_scale_default_config_larger_than_memory_is_refused_before_it_is_built():
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig

    with pytest.raises(UsageError, match="needs about .* GiB") as raised:
        load_lanes(RunConfig(model="deepseek_v3", scale="full", db_url="memory:"))
    assert "--scale tiny" in raised.value.tip


@modern
def test_an_encoder_is_not_fuzzed_and_says_why():
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig

    with pytest.raises(NotFuzzable, match="not a language model fuzzkv drives yet .encoder: a BERT-like"):
        load_lanes(RunConfig(model="bert", scale="tiny", db_url="memory:"))


def test_a_continuation_holds_one_row_of_max_new_tokens_per_prompt():
    case = Case(prompts=((1, 2), (3,)), max_new_tokens=2, continuation=((4, 5), (6, 7)))
    assert Case.from_json(case.to_json()) == case and "drawn, fed one at a time" in case.describe()
    assert "continuation" not in Case(prompts=((1,),)).to_dict()  # greedy cases keep their stored form
    with pytest.raises(ValueError, match="continuation"):
        Case(prompts=((1, 2),), max_new_tokens=2, continuation=((4,),))


def test_a_drawn_continuation_is_what_the_cached_path_feeds():
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig

    backend = load_lanes(RunConfig(model="llama", scale="tiny", db_url="memory:")).lanes["hf"].backends[0]
    case = Case(prompts=((1, 2, 3), (4,)), max_new_tokens=3, continuation=((7, 8, 9), (10, 11, 12)))
    trace = backend.cached(case)
    assert trace.tokens[:, -3:].tolist() == [[7, 8, 9], [10, 11, 12]]


@modern
def test_a_recurrent_model_is_driven_as_its_library_intends():
    # Mamba multiplies the current hidden states by the mask it is given: fuzzkv gives it the mask of the
    # tokens of each call, as its own generate() does (a mask over the cached tokens too would not broadcast).
    # Token by token its cached path is then right; a prompt fed in chunks is not: the real bug of
    # findings/transformers-mamba1-multi-token-cached-forward-drops-ssm-state.md, found and shrunk here.
    finished, recorder, _ = fuzz("mamba", oracles=("chunked",), max_examples=20)
    assert not finished.blind and not recorder.of("CanariesChecked")[0].missed
    [found] = finished.failures
    case = found.verdict.case
    # One decode step after a prompt of two or three tokens (which of the two is minimal depends on the weights).
    assert found.verdict.kind == "mismatch" and case.max_new_tokens == 1 and case.padded_length in (2, 3)
    assert case.prefill_chunks == (1, 2)  # a multi-token chunk on a non-empty cache; token by token it is right


@modern
@pytest.mark.slow
def test_a_norm_weight_dropped_under_the_cache_is_found_only_because_norm_weights_are_sensitive():
    import torch

    from tests.broken_architectures import norm_weight_dropped_when_cached

    model = norm_weight_dropped_when_cached()
    assert float(model.model.norm.weight.abs().min()) > 0  # transformers' init leaves it at zero: the bug would hide
    finished, _, _ = fuzz("tests.broken_architectures:norm_weight_dropped_when_cached", oracles=("decode",),
                          max_examples=30)
    [found] = finished.failures
    case = found.verdict.case
    # Shrunk to the first cached call that reads the cache: one row, three positions (a token and two decode
    # steps, or a prompt of two chunks of one and a decode step; which one depends on the weights drawn).
    assert found.verdict.kind == "mismatch" and case.batch_size == 1 and case.total_length == 3
    assert torch.isfinite(torch.tensor(found.verdict.metrics.max_abs_diff))


@modern
@pytest.mark.slow
def test_a_recurrent_state_decayed_under_the_cache_is_found_and_shrunk():
    finished, _, _ = fuzz("tests.broken_architectures:state_decayed_when_cached", oracles=("decode",),
                          max_examples=30)
    [found] = finished.failures
    case = found.verdict.case
    assert found.verdict.kind == "mismatch"
    # Shrunk to the first cached call: one row, three positions (a token and a decode step, or two chunks of one).
    assert case.batch_size == 1 and set(case.prompts[0]) == {0} and case.total_length == 3


@modern
def test_models_all_rows_say_source_kind_features_and_whether_it_builds():
    from fuzzkv.models.catalogue import curated_by_type, describe, sweep_names

    curated = curated_by_type()
    qwen3, llama, bert = describe("qwen3", None), describe("llama", curated["llama"]), describe("bert", None)
    assert (qwen3.name, qwen3.source, qwen3.kind, qwen3.builds) == ("qwen3", "generic", "decoder-only", True)
    assert "gqa" in qwen3.features and qwen3.model_class == "Qwen3ForCausalLM" and qwen3.mappings == ("causal-lm",)
    assert llama.source == "curated" and llama.builds
    assert not bert.builds and bert.reason.startswith("not fuzzed: encoder")
    assert set(qwen3.to_dict()) >= {"name", "model_type", "model_class", "mappings", "source", "features", "builds"}
    names = sweep_names()
    assert "qwen3" in names and "bert" not in names and len(names) == len(set(names))


@modern
def test_what_a_library_cannot_do_is_not_applicable_with_its_reason_and_what_it_intends_is_expected():
    # TrOCR numbers positions from the cache length (no position ids): a left-padded row is shifted in every
    # path, so the batch oracle has no meaning there. CPM-Ant's forward cannot use a static cache, and its
    # bidirectional context makes any cache an approximation by design: shown as expected, with the source line.
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig
    from fuzzkv.expected import expected_reason
    from fuzzkv.oracles import ORACLES

    def absent(name: str) -> dict[str, str]:
        capabilities = load_lanes(RunConfig(model=name, scale="tiny", db_url="memory:")).lanes["hf"].capabilities
        return dict(capabilities.absent)

    assert ORACLES["batch"].needs <= {"padded-positions"}
    assert "counts positions from the cache length" in absent("trocr")["padded-positions"]
    assert "padded-positions" not in absent("gpt2")
    assert "growing cache only" in absent("cpmant")["static-cache"]
    case = Case(prompts=((1, 1),)).to_dict()
    assert "modeling_cpmant.py:626" in (expected_reason("cpmant", "decode", case) or "")
    assert expected_reason("cpmant", "batch", case) is None and expected_reason("gpt2", "decode", case) is None
