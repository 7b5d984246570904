"""The precise twin computes what a full copy in the precise dtype computes, without holding the weights twice."""

from __future__ import annotations

import copy

import pytest
import torch

from fuzzkv import registry
from fuzzkv.backends import precision
from fuzzkv.models import shrink as hf_shrink
from fuzzkv.models.loading import build_random

MODELS = ("llama", "gpt2", "bloom-560m", "gemma-2-2b", "qwen2_moe")  # the last: a generic tiny MoE


def tiny(name: str, dtype: torch.dtype) -> torch.nn.Module:
    spec = registry.get(name)
    config = spec.config_for("tiny") if spec is not None else hf_shrink.tiny_config(name)
    model = build_random(config, seed=0, init_std=0.2, attn="eager")
    if name == "qwen2_moe":
        model.set_experts_implementation("eager")  # the grouped kernel has no float64 version (as HFBackend does)
    return model.to(dtype).eval()


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(("run", "precise"), [(torch.float32, torch.float64), (torch.bfloat16, torch.float32)])
def test_twin_equals_a_full_cast_copy(name: str, run: torch.dtype, precise: torch.dtype) -> None:
    model = tiny(name, run)
    before = {key: value.clone() for key, value in model.state_dict().items()}
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(1))
    expected = logits(copy.deepcopy(model).to(precise), ids)
    twin = precision.twin(model, precise)
    got = logits(twin, ids)
    assert got.dtype == precise
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    # The run model is untouched: same values, same dtype.
    for key, value in model.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key


def test_twin_shares_the_layers_storage_and_holds_only_the_rest() -> None:
    model = tiny("llama", torch.bfloat16)
    twin = precision.twin(model, torch.float32)
    layers, twin_layers = precision.streamed_units(model), precision.streamed_units(twin)
    assert len(layers) == model.config.num_hidden_layers
    for layer, twin_layer in zip(layers, twin_layers):
        for p, q in zip(layer.parameters(), twin_layer.parameters()):
            assert q.dtype == torch.bfloat16 and q.data_ptr() == p.data_ptr()  # cast only while called
    assert twin.model.embed_tokens.weight.dtype == torch.float32  # the parts outside the layers: cast once
    own, largest = precision.weight_bytes(model, torch.float32)
    outside = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.model.layers.parameters())
    assert own == outside * 4 and largest == sum(p.numel() for p in layers[0].parameters()) * 4


def test_the_twin_runs_in_and_out_of_inference_mode_alike() -> None:
    model = tiny("llama", torch.bfloat16)
    twin = precision.twin(model, torch.float32)
    ids = torch.tensor([[1, 2, 3]])
    with torch.inference_mode():
        first = twin(input_ids=ids).logits
    second = logits(twin, ids)
    with torch.inference_mode():
        third = twin(input_ids=ids).logits
    assert torch.equal(first, second) and torch.equal(second, third)


def test_a_layer_that_raises_gives_its_storage_back() -> None:
    model = tiny("llama", torch.bfloat16)
    twin = precision.twin(model, torch.float32)
    layer = precision.streamed_units(twin)[0]
    pointers = [p.data_ptr() for p in layer.parameters()]
    with pytest.raises(RuntimeError):  # a hidden state of the wrong width: the first projection raises
        layer(torch.zeros(1, 2, 3), position_embeddings=None)
    assert [p.data_ptr() for p in layer.parameters()] == pointers
    assert all(p.dtype == torch.bfloat16 for p in layer.parameters())


def test_a_twin_in_the_run_dtype_holds_no_weight_of_its_own() -> None:
    model = tiny("gpt2", torch.float32)
    twin = precision.twin(model, torch.float32)
    assert {p.data_ptr() for p in twin.parameters()} == {p.data_ptr() for p in model.parameters()}
    assert precision.weight_bytes(model, torch.float32)[0] == 0


def test_a_canary_keeps_its_planted_bug_in_the_precise_twin() -> None:
    from fuzzkv.backends.loader import load_lanes
    from fuzzkv.backends.mutants import Mutant
    from fuzzkv.case import Case
    from fuzzkv.config import RunConfig

    backend = load_lanes(RunConfig(model="llama", scale="tiny", dtype="bfloat16", db_url="memory:")).lanes["hf"].subject
    canary = backend.mutant("logit-offset-5pct", 10.0)
    precise = canary.precise_view()
    assert isinstance(precise.model, Mutant) and precise.model.kind == "logit-offset-5pct"
    assert next(precise.model.inner.parameters()).dtype == torch.float32  # the twin of the model it wraps
    case = Case(prompts=((3, 4),), max_new_tokens=2)
    tokens = precise.cached(case).tokens
    planted, plain = precise.cached(case, tokens).logits, backend.precise_view().cached(case, tokens).logits
    # The last position comes from a cached decode step: moved by 5% of the logit scale, in float32.
    shift = (planted[0, -1] - plain[0, -1]).float()
    torch.testing.assert_close(shift, torch.full_like(shift, 0.5), rtol=0, atol=1e-5)
