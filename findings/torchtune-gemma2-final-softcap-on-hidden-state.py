"""torchtune 0.6.1: Gemma-2's final logit soft-capping is applied to the normed hidden state, not to the logits.

HF (and Google's reference) compute ``logits = lm_head(norm(h))`` and then ``cap * tanh(logits / cap)`` with
``final_logit_softcapping`` (30). torchtune's ``Gemma2FinalNorm`` caps ``norm(h)`` before the output projection,
so its logits are never capped. Standalone: torch + transformers + torchtune (+ torchao). Exits 1 while the bug
is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import torchtune
    import transformers
    from torchtune.models.gemma2 import gemma2
    from transformers import Gemma2Config, Gemma2ForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers torchtune==0.6.1 torchao==0.10.0)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                      final_logit_softcapping=30.0, attn_logit_softcapping=None, sliding_window=64,
                      max_position_embeddings=64, attn_implementation="eager")
hf = Gemma2ForCausalLM(config).eval()
print(f"torch {torch.__version__}, transformers {transformers.__version__}, torchtune {torchtune.__version__}")
with torch.no_grad():
    hf.model.embed_tokens.weight.normal_(0.0, 1.0)  # logits well past the cap of 30, as trained Gemma-2's reach

tune = gemma2(vocab_size=256, num_layers=1, num_heads=4, head_dim=16, num_kv_heads=2, embed_dim=64,
              intermediate_dim=128, max_seq_len=64, hidden_capping_value=None, final_capping_value=30.0,
              sliding_window_size=64, query_pre_attn_scalar=16).eval()
# Map the weights by hand here, the norms where HF applies them (the converter swaps two of them: see
# torchtune-gemma2-feed-forward-norms-swapped), so that only the final soft-capping differs.
names = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.rms_norm.scale"}
for hf_part, tune_part in (("self_attn.q_proj", "attn.q_proj"), ("self_attn.k_proj", "attn.k_proj"),
                           ("self_attn.v_proj", "attn.v_proj"), ("self_attn.o_proj", "attn.output_proj"),
                           ("mlp.gate_proj", "mlp.w1"), ("mlp.down_proj", "mlp.w2"), ("mlp.up_proj", "mlp.w3")):
    names[f"model.layers.0.{hf_part}.weight"] = f"layers.0.{tune_part}.weight"
for hf_norm, tune_norm in (("input_layernorm", "sa_norm"), ("post_attention_layernorm", "sa_scale"),
                           ("pre_feedforward_layernorm", "mlp_norm"), ("post_feedforward_layernorm", "mlp_scale")):
    names[f"model.layers.0.{hf_norm}.weight"] = f"layers.0.{tune_norm}.scale"
state = hf.state_dict()
tune.load_state_dict({tune_name: state[hf_name] for hf_name, tune_name in names.items()}, strict=False)
# torchtune's rotary embedding and q/k layout match HF's only after its own permutation: use 1-token prompts, where
# position 0 has no rotation, so the comparison needs no RoPE at all.
tokens = torch.tensor([[5], [6], [7], [8]])
with torch.no_grad():
    expected = hf(tokens).logits
    got = tune(tokens)
print(f"largest |logit|: HF {expected.abs().max().item():.4g} (capped at 30), torchtune {got.abs().max().item():.4g}")
difference = (expected - got).abs().max().item()
print(f"max |logit difference| torchtune vs HF: {difference:.4g}")
failed = got.abs().max().item() > 30.0 and difference > 1e-3
print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
