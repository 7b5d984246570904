"""transformers: generate() with a static cache gives "hybrid_sliding" layers a full causal mask (Inkling family).

With a compileable cache (``cache_implementation="static"``), ``prepare_inputs_for_generation`` builds the
attention masks ahead of the forward through ``masking_utils.create_masks_for_generate``, which maps each
``config.layer_types`` entry through ``LAYER_PATTERN_TO_MASK_FUNCTION_MAPPING``. That table maps
``"hybrid_sliding"`` to ``{"sliding_attention": create_causal_mask, ...}``: the sliding layers get the causal
mask of the first *full* attention layer (no window, sized to the whole static cache) instead of
``create_sliding_window_causal_mask``, which the model's own forward uses. So once the prompt or the static
cache is longer than the sliding window, generate(cache_implementation="static") either raises (the mask is as
long as the static cache, the sliding layer's keys are not) or silently lets the sliding layers attend past
their window. The dynamic cache, and the model's forward with a StaticCache, are right. Exits 1 when present
(5.24.0); 0 on 5.25.0, whose table maps "hybrid_sliding" to create_sliding_window_causal_mask (the fix).
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, StaticCache
    from transformers.masking_utils import create_masks_for_generate, create_sliding_window_causal_mask
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

# fuzzkv's tiny twin of Inkling2TextConfig's defaults: 2 layers, ["hybrid_sliding", "hybrid"], window 8
CONFIG = {"conv_kernel_size": 4, "d_rel": 8, "eos_token_id": 511, "final_logit_softcapping": 30.0, "head_dim": 16,
          "hidden_act": "silu", "hidden_size": 64, "layer_types": ["hybrid_sliding", "hybrid"],
          "log_scaling_alpha": 0.1, "log_scaling_n_floor": 8, "max_position_embeddings": 128,
          "mlp_gate_softcap": 4.0, "mlp_up_softcap": 25.0, "moe_intermediate_size": 32,
          "n_layers_per_attn_res_block": 2, "n_routed_experts": 4, "num_attention_heads": 4, "num_experts_per_tok": 2,
          "num_hidden_layers": 2, "num_key_value_heads": 2, "qk_l2_clip_threshold": 22.627416997969522,
          "rel_extent": 8, "rel_l2_clip_threshold": 8.0, "rms_norm_eps": 1e-06, "route_scale": 8.0,
          "scoring_func": "sigmoid", "sliding_window_size": 8, "swa_head_dim": 16, "swa_num_attention_heads": 4,
          "swa_num_key_value_heads": 2, "unpadded_vocab_size": 512, "vocab_size": 512}

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
config = AutoConfig.for_model("inkling2_text", **CONFIG)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
with torch.no_grad():  # fuzzkv's sensitive init: transformers' std 0.02 makes logits nearly equal
    for parameter in model.parameters():  # every matrix, the relative-position bank `proj` too
        if parameter.dim() >= 2:
            parameter.normal_(0.0, 0.2 * (64 / parameter.shape[-1]) ** 0.5)
print(f"{type(model).__name__}: layer_types {config.layer_types}, sliding window {config.sliding_window}")


def generate(ids, new, implementation):
    vars(model).pop("_previous_max_cache_length", None)  # size the static cache for this call only
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                         min_new_tokens=new, do_sample=False, cache_implementation=implementation,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0)
    with torch.no_grad():
        one_pass = model(input_ids=out.sequences[:, :-1]).logits[:, ids.shape[1] - 1:]
    diff = (torch.stack(out.logits, 1) - one_pass).abs().amax(-1)[0]
    return diff, float(one_pass.abs().max())


bad = False
torch.manual_seed(1)
for prompt, new in [(4, 4), (10, 1), (1, 9), (3, 12)]:
    ids = torch.randint(3, 500, (1, prompt))
    line = f"prompt {prompt:2d}, {new:2d} new:"
    for implementation in ("dynamic", "static"):
        try:
            diff, scale = generate(ids, new, implementation)
            line += f"  {implementation}: max |logit diff| vs one pass {float(diff.max()):.3g} (scale {scale:.3g})"
            bad |= float(diff.max()) > 1e-3
        except RuntimeError as exc:
            line += f"  {implementation}: raised RuntimeError: {str(exc)[:90]}"
            bad = True
    print(line)

# The mask itself: the one generate() precomputes for a 10-token prefill into a static cache of 10, against
# the one the model's forward builds for its sliding layers (keys each query may attend to, per query).
cache = StaticCache(config=config, max_cache_len=10)
embeds = torch.empty((1, 10, 0))
masks = create_masks_for_generate(config=config, inputs_embeds=embeds, attention_mask=torch.ones(1, 10, dtype=torch.long),
                                  cache=cache, position_ids=torch.arange(10)[None])
own = create_sliding_window_causal_mask(config=config, inputs_embeds=embeds, attention_mask=torch.ones(1, 10, dtype=torch.long),
                                        cache=cache, position_ids=torch.arange(10)[None])
visible = lambda mask: (mask[0, 0] == 0).sum(-1).tolist()  # noqa: E731 (eager masks: 0 = attend, min = masked)
print("keys visible per query, generate()'s 'sliding_attention' mask:", visible(masks["sliding_attention"]))
print("keys visible per query, the model's own sliding mask:          ", visible(own))
bad |= visible(masks["sliding_attention"]) != visible(own)
print("REPRODUCED" if bad else "not reproduced")
sys.exit(1 if bad else 0)
