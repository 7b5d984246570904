"""The registry bundles real configs for the architectures the issue names."""

import pytest

from fuzzkv import registry

REQUIRED = ["bloom-560m", "gpt2", "pythia-70m", "opt-125m", "llama", "mistral-7b", "gemma-2-2b", "qwen2.5-0.5b",
            "phi-3-mini", "falcon-rw", "mpt", "gemma-3-1b", "smollm2-135m"]


def test_every_required_model_is_registered():
    assert set(REQUIRED) <= set(registry.names())


@pytest.mark.parametrize("name", REQUIRED)
def test_specs_are_complete(name):
    spec = registry.get(name)
    assert spec.hub_id and spec.params and spec.config["model_type"]
    assert set(spec.features) <= set(registry.FEATURES)
    assert spec.config_for("tiny") != spec.config_for("full")


def test_features_match_the_architectures():
    assert "alibi" in registry.get("bloom-560m").features
    assert "alibi" in registry.get("falcon-rw").features
    assert {"softcap", "sliding-window"} <= set(registry.get("gemma-2-2b").features)
    assert "sliding-window" in registry.get("mistral-7b").features
    assert "learned-positions" in registry.get("gpt2").features


def test_hub_ids_resolve_to_their_entry():
    assert registry.get("bigscience/bloom-560m").name == "bloom-560m"


def test_suggestions_for_a_typo():
    assert registry.suggestions("blom-560m")[0] == "bloom-560m"
    assert registry.suggestions("zzzzzzzz") == []
