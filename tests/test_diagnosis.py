"""Where it breaks: the first layer and part at which cached and uncached paths part.

The planted bugs in tests/broken_models.py each break a known place, so the diagnosis
must name it: a RoPE off-by-one writes wrong keys into the cache (keys differ at layer 0);
a dropped padding mask leaves the cache right but reads it wrongly (keys and values
agree, attention differs at layer 0). Clean models must agree at every layer.
"""

from __future__ import annotations

import pytest

from fuzzkv import diagnosis
from fuzzkv.backends.loader import load_lanes
from fuzzkv.case import Case
from fuzzkv.config import RunConfig
from tests.conftest import fuzz

TWO_ROWS = Case(prompts=((5, 6, 7), (8, 9)), padding_side="left", max_new_tokens=4)


def _hf(model: str):
    return load_lanes(RunConfig(model=model, scale="tiny")).lanes["hf"].backends[0]


def test_a_rope_off_by_one_is_placed_in_layer_0_keys_from_the_first_decode_step():
    found = diagnosis.cached_vs_uncached(_hf("tests.broken_models:off_by_one_positions"), TWO_ROWS, None, 1e-4)
    assert found["first"]["layer"] == 0 and found["first"]["part"] == "keys"
    assert found["first"]["position"] == TWO_ROWS.padded_length  # the first slot written while decoding
    assert "rotary" in found["explanation"]


def test_a_dropped_padding_mask_leaves_the_cache_right_and_breaks_attention():
    found = diagnosis.cached_vs_uncached(_hf("tests.broken_models:mask_dropped_when_cached"), TWO_ROWS, None, 1e-4)
    layer0 = found["layers"][0]
    assert layer0["keys"] < 1e-5 and layer0["values"] < 1e-5
    assert found["first"] == {**found["first"], "layer": 0, "part": "attention"}


@pytest.mark.parametrize("model", ["llama", "gpt2", "bloom-560m", "gemma-2-2b"])
def test_clean_models_agree_at_every_layer_and_part(model):
    found = diagnosis.cached_vs_uncached(_hf(model), TWO_ROWS, None, 1e-4)
    assert found["first"] is None
    parts = {part for entry in found["layers"] for part in entry if part in diagnosis.PARTS}
    assert parts == set(diagnosis.PARTS)  # every part was measured, not skipped
    assert max(entry[p] for entry in found["layers"] for p in diagnosis.PARTS if p in entry) < 1e-5


def test_a_run_stores_the_diagnosis_and_per_position_differences_with_the_failure():
    finished, _, store = fuzz("tests.broken_models:off_by_one_positions", oracles=("decode",), max_examples=40)
    record = store.failures()[0]
    assert record.diagnosis["first"]["part"] == "keys"
    per_position = record.metrics["per_position"]
    assert len(per_position) == record.case.total_length - 1
    bad = [i for i, v in enumerate(per_position) if v is not None and v > record.tolerance]
    assert bad and bad[0] == record.metrics["first_bad_position"]


def test_the_cross_oracle_localises_a_transformerlens_scale_bug_to_layer_0_attention():
    pytest.importorskip("transformer_lens")
    lanes = load_lanes(RunConfig(model="gemma-2-2b", scale="tiny", backend="both"))
    if "tl" not in lanes.lanes:
        pytest.skip(f"TransformerLens cannot build gemma-2 here: {lanes.unsupported.get('tl')}")
    hf, tl = lanes.lanes["hf"].backends[0], lanes.lanes["tl"].backends[0]
    case = Case(prompts=((3, 4, 5, 6),), max_new_tokens=2)
    trace = hf.cached(case)
    clean = diagnosis.across_backends(hf, tl, trace.tokens, trace.attention_mask, 1e-4)
    assert clean["first"] is None
    # Plant the bug class of background.md (Gemma-2's wrong attention scale in TransformerLens):
    # TL's layer-0 attention output off by the ratio 224/256, HF untouched.
    attention = diagnosis.layer_parts(diagnosis.decoder_layers(tl.module())[0])["attention"]
    handle = attention.register_forward_hook(lambda _m, _i, out: (out[0] * 0.875, *out[1:])
                                             if isinstance(out, tuple) else out * 0.875)
    try:
        broken = diagnosis.across_backends(hf, tl, trace.tokens, trace.attention_mask, 1e-4)
    finally:
        handle.remove()
    assert broken["first"]["layer"] == 0 and broken["first"]["part"] == "attention"


def test_a_local_directory_with_a_tokenizer_gives_the_minimal_case_as_text(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    hf = _hf("llama")
    hf.model.save_pretrained(tmp_path)
    words = Tokenizer(models.WordLevel(vocab={f"w{i}": i for i in range(hf.info.vocab_size)}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0").save_pretrained(tmp_path)
    local = _hf(str(tmp_path))
    assert local.texts(((5, 6), (7,))) == ["w5 w6", "w7"]
    assert hf.texts(((5, 6),)) is None  # random weights: no tokenizer, no made-up text
