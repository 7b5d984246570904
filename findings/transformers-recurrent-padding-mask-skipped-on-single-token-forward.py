"""transformers: a padding token fed through the cache on its own leaks into every recurrent layer's state.

Hybrid and state-space models (Mamba2 mixers, Mamba1 mixers of Jamba/Zamba, gated delta nets, KDA, lightning
attention, short convolutions) zero padded positions before their conv / recurrent state with the 2-D mask
from ``masking_utils.create_recurrent_attention_mask``. That function returns ``None`` whenever the forward
has one token ("single-token decode never contains padding"), so a one-token forward on a cache ignores
the mask. Left-padded batches prefilled one token at a time, as ``generate(prefill_chunk_size=1)`` does,
push their padding tokens into the conv and recurrent state; the padded rows' logits then differ from one
uncached pass, and from ``generate()`` without chunking, by several logits. Exits 1 when the bug is present.
"""
import inspect
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

CONFIGS = {  # tiny twins of the config classes' defaults (fuzzkv's generic shrinker); only these keys differ
    "mamba2": {"num_heads": 8, "head_dim": 16, "vocab_size": 512, "hidden_size": 64, "state_size": 8,
              "num_hidden_layers": 2, "n_groups": 1, "time_step_rank": 8, "chunk_size": 8},
    "bamba": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "attn_layer_indices":
             [1], "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_chunk_size": 8},
    "falcon_h1": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "mamba_d_ssm":
                 128, "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_d_state": 8, "mamba_chunk_size": 8},
    "granitemoehybrid": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
                        "num_local_experts": 4, "shared_intermediate_size": 32, "layer_types": ["linear_attention",
                        "full_attention"], "mamba_n_heads": 8, "mamba_d_state": 8, "mamba_d_head": 16,
                        "mamba_chunk_size": 8},
    "nemotron_h": {"vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                  "head_dim": 16, "max_position_embeddings": 128, "intermediate_size": 128, "use_mamba_kernels":
                  False, "ssm_state_size": 8, "mamba_num_heads": 8, "mamba_head_dim": 16, "n_groups": 1, "chunk_size":
                  8, "n_routed_experts": 4, "moe_intermediate_size": 32, "moe_shared_expert_intermediate_size": 32},
    "zamba2": {"vocab_size": 512, "max_position_embeddings": 128, "hidden_size": 64, "num_hidden_layers": 2,
              "layers_block_type": ["linear_attention", "hybrid"], "mamba_d_state": 8, "use_mamba_kernels": False,
              "chunk_size": 8, "intermediate_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
              "adapter_rank": 8, "attention_hidden_size": 128, "attention_head_dim": 32, "mamba_headdim": 16,
              "kv_channels": 16, "num_query_groups": 4, "hybrid_layer_ids": [1]},
    "jamba": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "num_experts": 4,
             "attn_layer_period": 3, "attn_layer_offset": 0, "use_mamba_kernels": False, "mamba_d_state": 8,
             "mamba_dt_rank": 8},
    "zamba": {"vocab_size": 512, "hidden_size": 64, "attention_hidden_size": 128, "intermediate_size": 128,
             "num_hidden_layers": 4, "num_attention_heads": 4, "attention_head_dim": 32, "num_key_value_heads": 2,
             "n_mamba_heads": 8, "max_position_embeddings": 128, "attn_layer_period": 4, "use_mamba_kernels": False,
             "mamba_d_state": 8, "mamba_dt_rank": 8, "layers_block_type": ["linear_attention", "linear_attention",
             "hybrid", "hybrid"]},
    "qwen3_next": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "max_position_embeddings": 128, "head_dim": 16, "linear_key_head_dim": 16,
                  "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                  "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts_per_tok": 2,
                  "num_experts": 4, "layer_types": ["linear_attention", "full_attention"]},
    "qwen3_5_text": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "head_dim":
                    16, "linear_key_head_dim": 16, "linear_value_head_dim": 16, "linear_num_key_heads": 2,
                    "linear_num_value_heads": 4, "layer_types": ["linear_attention", "full_attention"]},
    "qwen3_5_moe_text": {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                        "max_position_embeddings": 128, "head_dim": 16, "linear_key_head_dim": 16,
                        "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                        "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts_per_tok": 2,
                        "num_experts": 4, "layer_types": ["linear_attention", "full_attention"]},
    "qwen4_exp_text": {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                      "max_position_embeddings": 128, "head_dim": 16, "linear_key_head_dim": 16,
                      "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                      "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts_per_tok": 2,
                      "num_experts": 4, "layer_types": ["linear_attention", "indexed_attention"], "hc_lowrank": 8,
                      "ple_embed_dim": 64, "indexer_n_heads": 4, "indexer_kv_heads": 1, "indexer_head_dim": 16,
                      "indexer_budget": 8, "indexer_compress_ratio": 4},
    "lara_mini": {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "max_position_embeddings": 128, "head_dim": 16, "linear_key_head_dim": 16,
                 "linear_value_head_dim": 16, "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                 "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts_per_tok": 2,
                 "num_experts": 4, "layer_types": ["linear_attention", "sliding_attention", "full_attention"],
                 "eos_token_id": 511, "sliding_window": 8},
    "olmo_hybrid": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "pad_token_id":
                   510, "eos_token_id": 511, "layer_types": ["linear_attention", "full_attention"],
                   "linear_num_key_heads": 4, "linear_num_value_heads": 4, "linear_key_head_dim": 12,
                   "linear_value_head_dim": 24},
    "kimi_linear": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                   "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4, "kv_lora_rank": 16,
                   "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 8, "num_experts_per_token": 2,
                   "model_max_length": 128, "pad_token_id": 509, "bos_token_id": 511, "eos_token_id": 510,
                   "num_experts": 4, "mlp_layer_types": ["dense", "sparse", "sparse"], "layer_types":
                   ["linear_attention", "linear_attention", "full_attention"], "linear_head_dim": 16,
                   "linear_num_heads": 2, "qk_head_dim": 16, "head_dim": 8},
    "bailing_hybrid": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                      "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4, "kv_lora_rank": 16,
                      "qk_rope_head_dim": 8, "v_head_dim": 16, "qk_nope_head_dim": 8, "num_expert_group": 1,
                      "topk_group": 1, "num_experts_per_token": 2, "first_k_dense_replace": 1, "model_max_length":
                      128, "pad_token_id": 511, "eos_token_id": 510, "num_experts": 4, "head_dim": 8,
                      "layer_group_size": 3, "layer_types": ["linear_attention", "linear_attention",
                      "full_attention"], "mlp_layer_types": ["dense", "sparse", "sparse"], "linear_head_dim": 8,
                      "linear_num_heads": 4, "qk_head_dim": 16},
    # lfm2: one conv layer and one attention layer (fuzzkv's shrinker kept two attention layers only)
    "lfm2": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "full_attn_idxs": [1],
            "layer_types": ["conv", "full_attention"]},
    "lfm2_moe": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32,
                "num_hidden_layers": 2, "max_position_embeddings": 128, "num_attention_heads": 4,
                "num_key_value_heads": 2, "num_dense_layers": 1, "num_experts_per_tok": 2, "num_experts": 4,
                "layer_types": ["conv", "full_attention"]},
    "lfm3": {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128, "pad_token_id": 511,
            "bos_token_id": 510, "eos_token_id": 509, "layer_types": ["conv", "full_attention", "sliding_attention"],
            "head_dim": 16, "sliding_window": 8},
    "zaya": {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 128, "moe_intermediate_size": 32, "num_experts": 4, "layer_types": ["hybrid",
            "hybrid"], "head_dim": 16},
    "inkling2_text": {"vocab_size": 512, "unpadded_vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "swa_num_attention_heads": 4,
                     "swa_num_key_value_heads": 2, "swa_head_dim": 16, "sliding_window_size": 8, "d_rel": 8,
                     "rel_extent": 8, "log_scaling_n_floor": 8, "layer_types": ["hybrid_sliding", "hybrid"],
                     "max_position_embeddings": 128, "moe_intermediate_size": 32, "n_routed_experts": 4,
                     "num_experts_per_tok": 2, "eos_token_id": 511, "n_layers_per_attn_res_block": 2},
}
# Row 0 is left-padded by one token, row 1 is not: ids [[PAD, 11, 12], [13, 14, 15]].
TOKENS, MASK = [[None, 11, 12], [13, 14, 15]], torch.tensor([[0, 1, 1], [1, 1, 1]])
THRESHOLD = 1e-3  # rounding noise here is ~1e-5

print(f"torch {torch.__version__}, transformers {transformers.__version__}")
worst = 0.0
for model_type, overrides in CONFIGS.items():
    config = AutoConfig.for_model(model_type, **overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for module in model.modules():  # fuzzkv's sensitive init: transformers' std 0.02 makes logits nearly equal
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.2 * (64 / module.weight.shape[1]) ** 0.5)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids = torch.tensor([[pad if t is None else t for t in row] for row in TOKENS])
    positions = (MASK.cumsum(-1) - 1).clamp(min=0)
    takes_positions = "position_ids" in inspect.signature(model.forward).parameters

    def extra(s, positions=positions, takes_positions=takes_positions):
        return {"position_ids": positions[:, s]} if takes_positions else {}

    with torch.no_grad():
        one_pass = model(input_ids=ids, attention_mask=MASK, use_cache=False, **extra(slice(None))).logits
        # the prompt through the cache one token at a time, with the mask so far (as generate's chunked prefill)
        cache, steps = DynamicCache(config=config), []
        for i in range(ids.shape[1]):
            steps.append(model(input_ids=ids[:, i:i + 1], attention_mask=MASK[:, :i + 1], cache=cache, use_cache=True,
                               **extra(slice(i, i + 1))).logits)
        diff = (torch.cat(steps, 1) - one_pass).abs().amax(-1)
        # the library's own chunked prefill: generate(prefill_chunk_size=1) vs generate()
        kwargs = dict(input_ids=ids, attention_mask=MASK, max_new_tokens=1, do_sample=False, output_logits=True,
                      return_dict_in_generate=True, pad_token_id=pad)
        try:
            plain = model.generate(**kwargs).logits[0]
            chunked = model.generate(**kwargs, prefill_chunk_size=1).logits[0]
            gap = (chunked - plain).abs().amax(-1)
            generated = f"{float(gap[0]):.2e} (row 0), {float(gap[1]):.2e} (row 1)"
        except ValueError as exc:  # Mamba2 alone on 5.24: generate cannot chunk a cache without attention layers
            generated = f"n/a ({type(exc).__name__})"
    print(f"{type(model).__name__}: max |logit diff|, one token at a time vs one pass: padded row "
          f"{['pad'] + [f'{d:.2e}' for d in diff[0, 1:].tolist()]}, "
          f"unpadded row {[f'{d:.2e}' for d in diff[1].tolist()]}; "
          f"generate(prefill_chunk_size=1) vs generate(): {generated}; logit scale {float(one_pass.abs().max()):.3g}")
    worst = max(worst, float(diff[0, 1:].max()))
print("REPRODUCED" if worst > THRESHOLD else "not reproduced")
sys.exit(1 if worst > THRESHOLD else 0)
