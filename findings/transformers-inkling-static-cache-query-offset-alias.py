"""transformers: Inkling's full-attention layers read their query offset after the StaticCache update has moved it.

``InklingAttention.forward`` takes ``q_offset = cache.get_query_offset(layer_idx)`` "before updating the cache",
then calls ``cache.update(...)``, then builds ``q_positions = arange(q_length) + q_offset`` for its relative
position bias. For a full-attention layer in a ``StaticCache`` (``StaticLayer``), ``get_query_offset`` returns the
layer's ``cumulative_length`` tensor itself, which ``update`` then increments in place (``add_``). The query
positions come out ``q_length`` too far, so every cached step after the first one applies the relative position
bias at the wrong distances. The DynamicCache (a Python int) and the sliding layers (``cumulative_length_int``)
are right; so is the first forward into an empty cache (its offset is the int 0). Exits 1 when present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, StaticCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

# fuzzkv's tiny twin of InklingTextConfig's defaults: 2 layers, ["hybrid_sliding", "hybrid"], window 8
CONFIG = {"bos_token_id": 1, "eos_token_id": 2, "conv_kernel_size": 4, "d_rel": 8, "head_dim": 16, "hidden_act": "silu",
          "hidden_size": 64, "intermediate_size": 128, "layer_types": ["hybrid_sliding", "hybrid"],
          "logits_mup_width_multiplier": 24.0, "max_position_embeddings": 128, "mlp_layer_types": ["sparse", "sparse"],
          "moe_intermediate_size": 32, "n_routed_experts": 4, "n_shared_experts": 1, "num_attention_heads": 4,
          "num_experts_per_tok": 2, "num_hidden_layers": 2, "num_key_value_heads": 2, "number_of_conv_states": 4,
          "rel_extent": 8, "rms_norm_eps": 1e-06, "rms_norm_eps_moe_gate": 1e-06, "route_scale": 8.0,
          "shared_expert_sink": True, "sliding_window_size": 8, "swa_head_dim": 16, "swa_num_attention_heads": 4,
          "swa_num_key_value_heads": 2, "vocab_size": 512}

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
config = AutoConfig.for_model("inkling_text", **CONFIG)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
model.set_experts_implementation("eager")  # the grouped_mm experts take no float64
with torch.no_grad():  # fuzzkv's sensitive init: transformers' std 0.02 makes logits nearly equal
    for parameter in model.parameters():  # every matrix, the relative-position bank `proj` too
        if parameter.dim() >= 2:
            parameter.normal_(0.0, 0.2 * (64 / parameter.shape[-1]) ** 0.5)

# The alias: the offset read "before the update" is the tensor the update increments.
cache = StaticCache(config=config, max_cache_len=8)
with torch.no_grad():
    model(input_ids=torch.tensor([[5, 6]]), cache=cache, use_cache=True)
offset = cache.get_query_offset(1)
print(f"layer 1 ({type(cache.layers[1]).__name__}): get_query_offset(1) = {int(offset)}, "
      f"is its cumulative_length tensor: {offset is cache.layers[1].cumulative_length}")
cache.update(torch.zeros(1, 2, 1, 16), torch.zeros(1, 2, 1, 16), 1)
print(f"after cache.update(one token) the offset read before it is {int(offset)}")

ids = torch.tensor([[5, 9, 13, 17, 21, 25, 29, 33]])  # 8 tokens: within the window, so only this bug shows
bad = False
for dtype in (torch.float32, torch.float64):
    model.to(dtype)
    with torch.no_grad():
        one_pass = model(input_ids=ids, use_cache=False).logits.double()
        for kind in ("dynamic", "static"):
            cache = DynamicCache(config=config) if kind == "dynamic" else StaticCache(config=config, max_cache_len=8)
            steps = [model(input_ids=ids[:, :4], cache=cache, use_cache=True).logits]  # prefill 4
            for t in range(4, 8):  # then one token at a time
                steps.append(model(input_ids=ids[:, t:t + 1], cache=cache, use_cache=True).logits)
            diff = (torch.cat(steps, 1).double() - one_pass).abs().amax(-1)[0]
            print(f"{str(dtype)[6:]:7s} {kind:7s} cache, prefill 4 then 1 by 1, max |logit diff| per position vs one "
                  f"pass: {[f'{d:.2e}' for d in diff.tolist()]} (logit scale {float(one_pass.abs().max()):.3g})")
            bad |= kind == "static" and float(diff.max()) > 1e-3
model.to(torch.float32)
out = model.generate(input_ids=ids[:, :4], max_new_tokens=4, min_new_tokens=4, do_sample=False,
                     cache_implementation="static", output_logits=True, return_dict_in_generate=True, pad_token_id=0)
with torch.no_grad():
    reference = model(input_ids=out.sequences[:, :-1]).logits[:, 3:]
diff = (torch.stack(out.logits, 1) - reference).abs().amax(-1)[0]
print(f"generate(cache_implementation='static'), prompt 4, 4 new, max |logit diff| per step vs one pass: "
      f"{[f'{d:.2e}' for d in diff.tolist()]}")
print("REPRODUCED" if bad else "not reproduced")
sys.exit(1 if bad else 0)
