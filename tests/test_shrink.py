"""The generic config shrinker (hf_shrink) and the sensitive weights (hf_paths.sensitise), on real
transformers architectures at tiny scale."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.backends.hf.paths import sensitise
from fuzzkv.models import shrink as hf_shrink
from fuzzkv.models import twins

pytestmark = pytest.mark.skipif(int(transformers.__version__.split(".")[0]) < 5,
                                reason="the shrinker reads transformers 5.x config classes")


def config_object(config: dict):
    rest = {k: v for k, v in config.items() if k != "model_type"}
    return transformers.AutoConfig.for_model(config["model_type"], **rest)


def tiny_model(model_type: str, seed: int = 0):
    # The config first: the first tiny_config of a type builds and runs a model (drawing from the global
    # generator) and later ones come from its cache, so seeding before it would seed different draws.
    config = hf_shrink.tiny_config(model_type)
    torch.manual_seed(seed)
    model = hf_shrink.build(config)
    sensitise(model, 0.2, seed)
    return model


@pytest.mark.parametrize(("model_type", "per_layer"), [
    ("jamba", "layers_block_type"),  # attention every 8th layer, experts every 2nd: computed from periods
    ("qwen3_next", "layer_types"),  # three linear-attention layers, then full attention
    ("gemma3_text", "layer_types"),  # five sliding-window layers, then a global one
    ("nemotron_h", "hybrid_override_pattern"),  # a "M-M*-" style pattern string
    ("recurrent_gemma", "layers_block_type"),  # a cyclic (recurrent, recurrent, attention) block pattern
    ("llama4_text", "layer_types"),  # chunked attention, with every 4th layer global
])
def test_a_hybrid_stack_keeps_one_layer_of_each_kind(model_type, per_layer):
    default = config_object(hf_shrink.default_config(model_type))
    tiny = config_object(hf_shrink.tiny_config(model_type))
    assert set(getattr(tiny, per_layer)) == set(getattr(default, per_layer))
    assert len(getattr(tiny, per_layer)) == hf_shrink.layer_count(tiny) <= hf_shrink.layer_count(default)
    # every per-layer list the default has, at once (a tiny stack of 3 may make a 3-long pattern look per-layer)
    views = set(hf_shrink.layer_views(default))
    assert set(hf_shrink.layer_kinds(tiny, views)) == set(hf_shrink.layer_kinds(default, views))


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "olmo2", "falcon_h1", "mamba", "deepseek_v3", "gemma2"])
def test_tiny_configs_build_and_are_small(model_type):
    config = hf_shrink.tiny_config(model_type)
    assert json.loads(json.dumps(config)) == config and config["model_type"] == model_type
    model = hf_shrink.build(config)
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert hf_shrink.cached_vs_uncached(model) < 1e-4


def test_moe_routing_is_on_with_a_dense_layer_first():
    config = hf_shrink.tiny_config("deepseek_v3")
    assert (config["n_routed_experts"], config["num_experts_per_tok"], config["first_k_dense_replace"]) == (4, 2, 1)
    assert config["num_hidden_layers"] >= 2  # layer 0 dense, layer 1 routed
    assert {"mla", "moe"} <= set(hf_shrink.features(config))


def test_windows_are_shorter_than_the_prompt_and_features_are_detected():
    config = hf_shrink.tiny_config("gemma2")
    assert config["sliding_window"] <= 8 < hf_shrink.PROMPT
    assert config["attn_logit_softcapping"] and config["final_logit_softcapping"]  # softcaps stay on
    assert hf_shrink.features(config) == ("rope", "sliding-window", "softcap", "gqa")
    assert hf_shrink.features(hf_shrink.tiny_config("mamba")) == ("ssm", "conv-state")


def test_special_tokens_stay_inside_the_tiny_vocabulary():
    default, tiny = hf_shrink.default_config("phi3"), hf_shrink.tiny_config("phi3")
    assert default["eos_token_id"] == default["pad_token_id"] == 32000 and default["bos_token_id"] == 1
    assert tiny["eos_token_id"] == tiny["pad_token_id"] < tiny["vocab_size"] == 512  # the same id stays one id
    assert tiny["bos_token_id"] == 1  # an id already inside stays


@pytest.mark.parametrize(("model_type", "why"), [
    ("bert", "encoder"),  # not decoder-only: never shrunk
    ("rwkv", "takes no cache"),  # decoder-only, but its recurrent state is no cache the fuzzer can drive
])
def test_what_cannot_be_built_says_why(model_type, why):
    with pytest.raises(hf_shrink.CannotBuild) as raised:
        hf_shrink.tiny_config(model_type)
    assert why in str(raised.value) and "\n" not in str(raised.value)


def test_kinds_are_decided_from_the_config_classes():
    assert hf_shrink.kind("llama") == ("decoder-only", "")
    assert hf_shrink.kind("bart")[0] == "encoder-decoder"
    assert hf_shrink.kind("roberta")[0] == "encoder"
    assert hf_shrink.kind("gemma3")[0] == "multimodal"
    assert hf_shrink.kind("mpt")[0] == "decoder-only"  # its attn_config sub-config is a part of the decoder
    assert "llama" in hf_shrink.causal_lm_types() and hf_shrink.causal_lm_class("qwen3") == "Qwen3ForCausalLM"


def test_every_generative_mapping_is_listed_with_what_each_type_is():
    """#34: `models --all` lists the causal-LM, image-text-to-text, multimodal-LM, seq2seq and speech-seq2seq
    mappings' types (329 on transformers 5.25), each with the mappings that list it; one listed by no causal-LM
    mapping says what it is, and whether it is fuzzed: a text seq2seq model is, as its seq2seq LM class; a multimodal
    model is not yet."""
    types = hf_shrink.generative_types()
    assert set(hf_shrink.causal_lm_types()) <= set(types)
    if hf_shrink.transformers.__version__ == "5.25.0":
        assert len(types) == 329
    assert [mapping for mapping, _ in types["t5"]] == ["seq2seq"] and hf_shrink.model_class("t5") == "T5ForConditionalGeneration"
    assert hf_shrink.kind("t5") == ("encoder-decoder", "a seq2seq model: its decoder attends to an encoder's output")
    assert hf_shrink.fuzzed("t5") and hf_shrink.model_class("bart") == "BartForConditionalGeneration"
    assert hf_shrink.kind("whisper")[0] == "encoder-decoder"  # a speech seq2seq model, fed audio features
    assert hf_shrink.tiny_config("whisper")["max_source_positions"] == hf_shrink.AUDIO_POSITIONS
    # its main input is ``inputs``: generate() feeds its Wav2Vec2 encoder's ``input_values``, and so does fuzzkv
    assert "input_values" in hf_paths.encoder_keywords(hf_shrink.build(hf_shrink.tiny_config("speech-encoder-decoder")),
                                                       torch.tensor([[3, 4]]), torch.tensor([[1, 1]]))
    assert hf_shrink.kind("llava")[0] == "multimodal" and "image-text-to-text" in dict(types["llava"])
    assert hf_shrink.fuzzed("llava") and hf_shrink.model_class("llava") == "LlavaForConditionalGeneration"
    with pytest.raises(hf_shrink.CannotBuild, match="not fuzzed yet"):
        twins.tiny_config("chameleon")  # a VQ image tokenizer: no image-text-to-text class, no audio tower
    # an audio LM the seq2seq mapping lists first is one decoder over text and audio, fuzzed as a multimodal model
    assert hf_shrink.kind("audioflamingo3")[0] == "multimodal" and twins.tiny_config("audioflamingo3")


@pytest.mark.parametrize("model_type", ["gemma2", "gpt2", "mamba", "qwen3_next", "deepseek_v3"])
def test_sensitise_leaves_no_parameter_at_its_default(model_type):
    torch.manual_seed(0)
    model = hf_shrink.build(hf_shrink.tiny_config(model_type))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    sensitise(model, 0.2)
    for name, parameter in model.named_parameters():
        if parameter.numel() > 1:
            assert not bool((parameter == parameter.flatten()[0]).all()), f"{name} is constant"
        assert not torch.equal(parameter, before[name]), f"{name} kept its default"
    step, full = hf_shrink.decode_step_logits(model)
    assert bool(full.isfinite().all()) and 0.5 < float(full.std()) < 10


def test_sensitise_redraws_norms_and_state_space_parameters_where_they_matter():
    gemma = tiny_model("gemma2")  # Gemma's norms compute (1 + w): transformers initialises w to zero
    norm = gemma.model.norm.weight.detach()
    assert 0.02 < float(norm.std()) < 0.3 and abs(float(norm.mean())) < 0.1
    mamba = tiny_model("mamba")
    mixer = mamba.backbone.layers[0].mixer
    decay = -torch.exp(mixer.A_log.detach())
    assert float(decay.min()) >= -8 and float(decay.max()) <= -1
    step = torch.nn.functional.softplus(mixer.dt_proj.bias.detach())
    assert float(step.min()) >= 1e-3 * 0.99 and float(step.max()) <= 1e-1 * 1.01


def test_sensitise_is_deterministic_given_the_seed():
    first, second, other = tiny_model("falcon_h1", seed=3), tiny_model("falcon_h1", seed=3), tiny_model("falcon_h1")
    for (name, a), (_, b), (_, c) in zip(first.named_parameters(), second.named_parameters(), other.named_parameters()):
        assert torch.equal(a, b), name
        assert a.numel() == 1 or not torch.equal(a, c), name


def test_a_composite_config_whose_causal_lm_class_takes_token_ids_alone_is_its_text_decoder():
    """#34: Llama4ForCausalLM (llama4), Qwen3_5ForCausalLM (qwen3_5) and their kind take a text sub-config: they are
    decoder-only models, built and fuzzed as what that class builds; a class that needs pixel values stays multimodal."""
    composites = [t for t in hf_shrink.causal_lm_types() if hf_shrink.text_decoder_type(t) is not None]
    assert {"llama4", "qwen3_5"} <= set(composites)
    for model_type in ("llama4", "qwen3_5"):
        assert hf_shrink.kind(model_type) == ("decoder-only", "")
        text = hf_shrink.text_decoder_type(model_type)
        assert hf_shrink.tiny_config(model_type) == hf_shrink.tiny_config(text)
    assert hf_shrink.text_decoder_type("gemma3") is None and hf_shrink.kind("gemma3")[0] == "multimodal"


def test_a_released_config_keeps_everything_but_depth_and_vocabulary():
    """#34: for a release that builds an architecture only from its official configs, both sides are built from the
    released config with one layer of each kind and a small vocabulary: its widths, attention scale, softcaps and
    window stay as released, and the shrink is said in one line."""
    from fuzzkv import registry

    spec = registry.get("gemma-2-2b")
    released = {"model_type": spec.model_type, **spec.config}
    shallow, shrunk = hf_shrink.shallow_config(released)
    assert shrunk == "num_hidden_layers 26 -> 2, vocab_size 256000 -> 512"
    for kept in ("hidden_size", "intermediate_size", "head_dim", "num_attention_heads", "num_key_value_heads",
                 "query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping", "sliding_window"):
        assert shallow[kept] == released[kept], kept
    assert all(0 <= shallow[name] < 512 for name in ("bos_token_id", "eos_token_id", "pad_token_id"))
    hf_shrink.build(shallow)  # it builds


def test_a_driver_that_builds_only_official_configs_decides_how_the_model_is_built(monkeypatch):
    from fuzzkv.backends import drivers, loader

    def gemma_only(config):
        return "the toy release builds Gemma-2 only from its official configs" if config["model_type"] == "gemma2" else ""

    monkeypatch.setitem(drivers.DRIVERS, "toy", drivers.Driver("toy", "Toy", "toy", official_only=gemma_only))
    assert loader.official_only("gemma-2-2b", ("hf", "toy")) == gemma_only({"model_type": "gemma2"})
    assert loader.official_only("gemma-2-2b", ("hf",)) == ""  # no backend of the run needs it
    assert loader.official_only("llama", ("hf", "toy")) == ""
    assert loader.official_only("not-a-registry-name", ("hf", "toy")) == ""
