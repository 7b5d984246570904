"""Every knob proves it acted (#32): a setting the library ignores is never counted as tested, and a folder is
loaded as the class its config names or refused, never silently as a stock class."""

import pytest

from fuzzkv.backends.hf.paths import transformers_major
from tests.conftest import fuzz

modern = pytest.mark.skipif(transformers_major() < 5, reason="attention is switched after loading on transformers 5.x")


@modern
def test_an_attention_switch_the_model_ignores_makes_attn_impl_not_applicable_in_the_librarys_words():
    # The model drops its padding mask under sdpa, but ignores set_attn_implementation("sdpa"): comparing its
    # "sdpa" twin with the run would compare eager with eager and pass every example.
    finished, recorder, _ = fuzz("tests.broken_surfaces:ignores_attention_switch", oracles=("attn-impl",),
                                 max_examples=20)
    [skipped] = recorder.of("OracleSkipped")
    assert skipped.oracle == "attn-impl", skipped
    assert "set_attn_implementation('sdpa') did not take" in skipped.reason, skipped.reason
    assert "does not support setting its attention implementation dynamically" in skipped.reason, skipped.reason
    assert not recorder.of("OracleFinished") and not finished.failures
    assert finished.incomplete  # asked for by name and not run: never ok


@modern
def test_an_attention_switch_that_takes_still_runs_attn_impl():
    finished, recorder, _ = fuzz("tests.broken_surfaces:sdpa_drops_padding_mask", oracles=("attn-impl",),
                                 max_examples=20)
    assert not recorder.of("OracleSkipped")
    assert [f.verdict.oracle for f in finished.failures] == ["attn-impl"]


@modern
def test_a_requested_attn_the_factory_model_ignores_is_refused_in_the_librarys_words():
    from fuzzkv.errors import UsageError

    with pytest.raises(UsageError) as refused:
        fuzz("tests.broken_surfaces:ignores_attention_switch", attn="sdpa", oracles=("decode",), max_examples=5)
    message = str(refused.value)
    assert "does not support --attn sdpa" in message and "did not take" in message, message
    assert "does not support setting its attention implementation dynamically" in message, message


def test_a_folder_naming_a_custom_class_is_refused_in_one_line_and_its_factory_finds_the_bug(tmp_path):
    # A subclass with a planted cache bug, saved: its config.json names SneakyLlama. Loaded as the stock
    # LlamaForCausalLM, the folder was reported clean.
    from transformers.utils import logging as hf_logging

    from tests.broken_models import sneaky_llama
    from tests.test_cli import ROOT, fuzzkv

    folder = tmp_path / "sneaky"
    hf_logging.disable_progress_bar()  # the test's own save: no bar in the test's output
    try:
        sneaky_llama().save_pretrained(folder)
    finally:
        hf_logging.enable_progress_bar()
    options = ("--scale", "tiny", "--oracle", "decode", "--max-examples", "20")
    refused = fuzzkv("run", "--model", str(folder), *options, "--db", f"sqlite:///{tmp_path / 'a.db'}", cwd=ROOT)
    assert refused.returncode == 2, refused.stdout + refused.stderr[-2000:]
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), refused.stderr
    assert "SneakyLlama" in lines[0] and "--model my_module:make" in lines[0], lines[0]
    found = fuzzkv("run", "--model", "tests.broken_models:sneaky_llama", *options,
                   "--db", f"sqlite:///{tmp_path / 'b.db'}", cwd=ROOT)
    assert found.returncode == 1, found.stdout + found.stderr[-2000:]


def test_a_generate_cache_implementation_the_library_ignores_is_refused_in_words_never_a_pass():
    # transformers 5.x unsets an explicit generate(cache_implementation="hybrid") and runs a DynamicCache without a
    # word (generation/utils.py, "Related to #40039"); 4.57 builds the StaticCache asked for.
    from fuzzkv.backends.interface import Refused
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.case import Case
    from fuzzkv.config import RunConfig

    backend = load_lanes(RunConfig(model="llama", scale="tiny", db_url="memory:")).lanes["hf"].backends[0]
    drawn = lambda implementation: Case(prompts=((1, 2, 3),), max_new_tokens=2,  # noqa: E731
                                        settings={"cache_implementation": implementation})
    assert backend.generate(drawn("static")).logits.shape[1] == 4  # a static cache, as asked: it runs
    if transformers_major() >= 5:
        with pytest.raises(Refused, match=r"generate\(cache_implementation='hybrid'\) ran on a DynamicCache, not a "
                                          r"static cache: transformers .* took the setting and did not apply it"):
            backend.generate(drawn("hybrid"))
    else:
        backend.generate(drawn("hybrid"))


def test_the_static_cache_check_reads_the_cache_generate_returned():
    from transformers import DynamicCache

    from fuzzkv.backends.hf.paths import SettingIgnored, static_cache_in_effect

    static_cache_in_effect("dynamic", {"cache": DynamicCache()})  # nothing static was asked
    static_cache_in_effect(None, {"cache": DynamicCache()})
    with pytest.raises(SettingIgnored, match="ran on a DynamicCache"):
        static_cache_in_effect("static", {"past_key_values": DynamicCache()})


def test_a_model_not_in_the_dtype_or_on_the_device_asked_for_is_refused_in_one_line():
    from fuzzkv import registry
    from fuzzkv.backends.hf.backend import _placed_as_asked
    from fuzzkv.errors import UsageError
    from fuzzkv.models.loading import build_random

    model = build_random(registry.get("llama").config_for("tiny"), seed=0, init_std=0.2, attn="eager")
    _placed_as_asked(model, "float32", "cpu")
    with pytest.raises(UsageError, match="--dtype bfloat16 --device cpu were asked for, and the model runs in float32"):
        _placed_as_asked(model, "bfloat16", "cpu")


def test_compiled_decoding_that_did_not_compile_is_said_never_counted():
    from fuzzkv import registry
    from fuzzkv.backends.hf.paths import SettingIgnored, compiled_in_effect
    from fuzzkv.models.loading import build_random

    model = build_random(registry.get("llama").config_for("tiny"), seed=0, init_std=0.2, attn="eager")
    with pytest.raises(SettingIgnored, match="ran its decoding steps uncompiled"):
        compiled_in_effect(model)  # never given to generate() with a compile config: nothing was compiled
