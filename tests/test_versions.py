"""What fuzzkv can reach on the installed transformers, checked on every release CI installs (4.46, 4.57, 5.23,
5.24): the kinds of model it classifies, the cache implementations generate() is drawn with, and a generic
architecture (one not in the registry) fuzzed end to end."""

import pytest
import transformers

from fuzzkv.models import shrink as hf_shrink
from tests.conftest import fuzz


@pytest.mark.parametrize("model_type, expected", [("bert", "encoder"), ("roberta", "encoder"),
                                                   ("llama", "decoder-only"), ("gptj", "decoder-only"),
                                                   ("olmo", "decoder-only")])
def test_encoders_heads_and_decoders_are_told_apart_on_every_release(model_type, expected):
    # transformers 4.x gives every config is_decoder=False and add_cross_attention: read naively, every model
    # would be a BERT-like encoder, and no generic architecture could be fuzzed on 4.x.
    assert hf_shrink.kind(model_type)[0] == expected


def test_a_generic_architecture_is_fuzzed_on_every_release():
    finished, recorder, _ = fuzz("gptj", oracles=("decode", "generate"), max_examples=10)
    assert not finished.failures and not finished.untested
    assert [e.oracle for e in recorder.of("OracleFinished")] == ["decode", "generate"]


def test_the_cache_implementations_generate_is_drawn_with_follow_the_installed_release():
    from transformers.generation import configuration_utils

    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.config import RunConfig

    def drawn(model):
        return load_lanes(RunConfig(model=model, scale="tiny", db_url="memory:")).lanes["hf"].capabilities.generate_caches

    listed = set(configuration_utils.ALL_CACHE_IMPLEMENTATIONS)
    llama, gemma2, mistral = drawn("llama"), drawn("gemma-2-2b"), drawn("mistral-7b")
    for names in (llama, gemma2, mistral):
        assert names[0] == "default" and len(set(names)) == len(names) and set(names[1:]) <= listed
    if transformers.__version__.startswith("4.46"):
        # Before 4.56 "sliding_window" and "hybrid" are classes for one kind of architecture each: a model's own
        # choice (Gemma-2's config names "hybrid"), and a sliding window for a model whose every layer slides.
        assert llama == ("default", "static") and gemma2 == ("default", "static", "hybrid")
        assert mistral == ("default", "static", "sliding_window")
    else:
        assert {"static", "sliding_window", "hybrid"} <= set(llama)  # aliases of "static", layers from the config
