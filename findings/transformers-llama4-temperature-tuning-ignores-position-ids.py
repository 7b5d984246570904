"""transformers: Llama 4's attention temperature tuning counts positions from the cache length, not position_ids.

On its NoPE layers ``Llama4TextAttention.forward`` scales the queries by
``log1p(floor((positions + 1) / floor_scale)) * attn_scale + 1`` with
``positions = arange(q_length) + cache.get_seq_length(layer_idx)``: the token's index in the padded batch, not
its position. ``position_ids`` (which generate() derives from the attention mask, and which RoPE uses) never
reach the attention module. A left-padded row is therefore scaled as if it were ``padding`` tokens further on,
and gets different logits than the same prompt alone as soon as its index and its position fall on different
sides of a multiple of ``floor_scale`` (8192 in the released configs; 8 in this tiny config, so that it shows
within a few tokens). The cached path agrees with the uncached one; it is the padded batch that is wrong, in a
plain forward and in generate() alike. Exits 1 when present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

# fuzzkv's tiny twin of Llama4TextConfig's defaults (floor_scale 8192 -> 8, chunk size 8192 -> 8)
CONFIG = {"attention_chunk_size": 8, "attn_scale": 0.1, "attn_temperature_tuning": True, "floor_scale": 8,
          "bos_token_id": 1, "eos_token_id": 2, "head_dim": 16, "hidden_size": 64, "interleave_moe_layer_step": 1,
          "intermediate_size": 128, "intermediate_size_mlp": 128, "layer_types": ["chunked_attention", "full_attention"],
          "max_position_embeddings": 128, "moe_layers": [0, 1], "no_rope_layers": [1, 0], "num_attention_heads": 4,
          "num_experts_per_tok": 1, "num_hidden_layers": 2, "num_key_value_heads": 2, "num_local_experts": 4,
          "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"}, "tie_word_embeddings": False,
          "use_qk_norm": True, "vocab_size": 512}
PAD = 0

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")


def build(temperature_tuning, dtype):
    config = AutoConfig.for_model("llama4_text", **dict(CONFIG, attn_temperature_tuning=temperature_tuning))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
    model.set_experts_implementation("eager")  # the grouped_mm experts take no float64
    with torch.no_grad():  # fuzzkv's sensitive init: transformers' std 0.02 makes logits nearly equal
        for parameter in model.parameters():
            if parameter.dim() >= 2:
                parameter.normal_(0.0, 0.2 * (64 / parameter.shape[-1]) ** 0.5)
    return model.to(dtype)


short, long = [5, 6, 7], [9, 10, 11, 12, 13, 14, 15, 16, 17, 18]  # the short row gets 7 pads on the left
ids = torch.tensor([[PAD] * 7 + short, long])
mask = torch.tensor([[0] * 7 + [1] * 3, [1] * 10])
positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes
bad = False
for temperature_tuning in (True, False):
    for dtype in (torch.float32, torch.float64):
        model = build(temperature_tuning, dtype)
        with torch.no_grad():
            batch = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[0, 7:]
            alone = model(input_ids=torch.tensor([short])).logits[0]
        diff = (batch - alone).abs().amax(-1)
        print(f"attn_temperature_tuning={temperature_tuning!s:5s} {str(dtype)[6:]:7s}: one forward, left-padded row "
              f"(indices 7-9, positions 0-2) vs alone, max |logit diff| per position: "
              f"{[f'{d:.2e}' for d in diff.tolist()]} (logit scale {float(alone.abs().max()):.3g})")
        bad |= temperature_tuning and float(diff.max()) > 1e-3
        if dtype == torch.float32:
            kwargs = dict(max_new_tokens=3, min_new_tokens=3, do_sample=False, output_logits=True,
                          return_dict_in_generate=True, pad_token_id=PAD)
            batched = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            single = model.generate(input_ids=torch.tensor([short]), **kwargs)
            steps = [float((b[0] - s[0]).abs().max()) for b, s in zip(batched.logits, single.logits)]
            print(f"attn_temperature_tuning={temperature_tuning!s:5s} float32: generate(), left-padded row vs alone, "
                  f"max |logit diff| per step: {[f'{d:.2e}' for d in steps]}; tokens {batched.sequences[0, 10:].tolist()} "
                  f"vs {single.sequences[0, 3:].tolist()}")
print("REPRODUCED" if bad else "not reproduced")
sys.exit(1 if bad else 0)
