"""The full-size build (#16): weights created empty and drawn once, in the run's dtype, equal to a whole build."""

from __future__ import annotations

import pytest
import torch
import transformers

from fuzzkv import registry
from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.models import loading as hf_loading
from fuzzkv.models import shrink as hf_shrink

modern = pytest.mark.skipif(hf_paths.transformers_major() < 5, reason="transformers 4.x builds the whole model")
GENERIC = ("qwen3", "gemma3_text", "mamba", "falcon_h1", "deepseek_v3", "gpt_neox", "olmo2", "starcoder2")


def config_of(name: str) -> dict:
    spec = registry.get(name)
    return dict(spec.config_for("tiny")) if spec is not None else hf_shrink.tiny_config(name)


def whole_build(config: dict, seed: int) -> torch.nn.Module:
    """What fuzzkv built before #16: transformers' own construction and init, then the same redraw."""
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    cfg.use_cache = True
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    hf_paths.sensitise(model, 0.2, seed)
    return model


@modern
@pytest.mark.parametrize("name", [*registry.names(), *GENERIC])
def test_the_empty_build_equals_a_whole_build(name: str) -> None:
    config = config_of(name)
    rest = {k: v for k, v in config.items() if k != "model_type"}
    cfg = transformers.AutoConfig.for_model(config["model_type"], **rest)
    cfg.use_cache = True
    assert hf_paths._empty_model(cfg, "eager", torch.float32, "cpu") is not None, "fell back to the whole build"
    fast, whole = hf_paths.random_model(config, 3, 0.2, "eager"), whole_build(config, 3)
    expected = whole.state_dict()
    assert fast.state_dict().keys() == expected.keys()
    for key, value in fast.state_dict().items():  # parameters and buffers alike
        assert torch.equal(value, expected[key]), key
    if fast.config.tie_word_embeddings and fast.get_output_embeddings() is not None:
        assert fast.get_output_embeddings().weight is fast.get_input_embeddings().weight


@modern
@pytest.mark.parametrize("name", ["llama", "gemma-2-2b", "bloom-560m"])
def test_a_half_precision_build_holds_the_float32_draws_rounded(name: str) -> None:
    config = config_of(name)
    half, full = hf_paths.random_model(config, 0, 0.2, "eager", "bfloat16"), hf_paths.random_model(config, 0, 0.2,
                                                                                                     "eager")
    buffers = dict(half.named_buffers())
    for key, parameter in half.named_parameters():
        assert parameter.dtype == torch.bfloat16
        assert torch.equal(parameter, full.get_parameter(key).to(torch.bfloat16)), key
    # Buffers stay as transformers keeps them in a half-precision model (rotary frequencies in float32).
    for key, buffer in full.named_buffers():
        assert torch.equal(buffers[key], buffer), key


def test_a_weight_depends_on_the_seed_and_its_name_only() -> None:
    config = config_of("llama")
    first, again, other = (hf_paths.random_model(config, seed, 0.2, "eager") for seed in (0, 0, 1))
    for (key, a), b, c in zip(first.named_parameters(), again.parameters(), other.parameters()):
        assert torch.equal(a, b), key
        assert not torch.equal(a, c), key


@modern
def test_the_memory_plan_counts_weights_per_backend_and_one_precise_layer() -> None:
    config = registry.get("mistral-7b").config_for("full")
    params = hf_loading.parameter_count(config)
    plan = hf_loading.memory_needed(config, hf_loading.Target("bfloat16", "cpu", copies=2))
    assert plan["weights"] == 2 * params * 2
    layer = 4 * (config["hidden_size"] ** 2 * 2 + 2 * config["hidden_size"] * config["hidden_size"] // 4
                 + 3 * config["hidden_size"] * config["intermediate_size"] + 2 * config["hidden_size"])
    outside = params - config["num_hidden_layers"] * layer // 4
    assert plan["precise"] == 4 * outside + layer  # float32: the parts outside the layers, and one layer
