"""torchtune 0.6.1: gemma2_hf_to_tune swaps each layer's pre- and post-feed-forward norms.

HF Gemma-2 applies ``pre_feedforward_layernorm`` to the MLP's input and ``post_feedforward_layernorm`` to its
output. torchtune's layer applies ``mlp_norm`` before the MLP and ``mlp_scale`` after it, but the converter maps
pre -> mlp_scale and post -> mlp_norm. Standalone: torch + transformers + torchtune (+ torchao). Exits 1 while the
bug is present.
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
    from torchtune.models.gemma2._convert_weights import gemma2_hf_to_tune
    from transformers import Gemma2Config, Gemma2ForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers torchtune==0.6.1 torchao==0.10.0)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                      final_logit_softcapping=1e6, attn_logit_softcapping=None, sliding_window=64,
                      max_position_embeddings=64, attn_implementation="eager")
hf = Gemma2ForCausalLM(config).eval()
with torch.no_grad():  # norms away from their initial value, so that which norm sits where matters
    for name, parameter in hf.named_parameters():
        if "norm" in name:
            parameter.normal_(0.0, 0.5)
print(f"torch {torch.__version__}, transformers {transformers.__version__}, torchtune {torchtune.__version__}")

state = {k: v for k, v in hf.state_dict().items() if k != "lm_head.weight"}  # tied: HF saves no lm_head
tune = gemma2(vocab_size=256, num_layers=2, num_heads=4, head_dim=16, num_kv_heads=2, embed_dim=64,
              intermediate_dim=128, max_seq_len=64, hidden_capping_value=None, final_capping_value=1e6,
              sliding_window_size=64, query_pre_attn_scalar=16)
tune.load_state_dict(gemma2_hf_to_tune(state, num_heads=4, num_kv_heads=2, dim=64, head_dim=16))
tune.eval()

layer = hf.model.layers[0]
print("pre_feedforward_layernorm is loaded into mlp_scale (applied after the MLP):",
      torch.equal(layer.pre_feedforward_layernorm.weight, tune.layers[0].mlp_scale.scale))

tokens = torch.tensor([[5, 6, 7, 8, 9, 10]])
with torch.no_grad():
    expected = hf(tokens).logits
    got = tune(tokens)
difference = (expected - got).abs().max().item()
print(f"max |logit difference| torchtune vs HF: {difference:.4g} (logits up to {expected.abs().max().item():.3g})")

# The same conversion with the two norms mapped where torchtune's layer applies them agrees with HF.
converted = gemma2_hf_to_tune(state, num_heads=4, num_kv_heads=2, dim=64, head_dim=16)
for i in range(config.num_hidden_layers):
    converted[f"layers.{i}.mlp_norm.scale"] = state[f"model.layers.{i}.pre_feedforward_layernorm.weight"]
    converted[f"layers.{i}.mlp_scale.scale"] = state[f"model.layers.{i}.post_feedforward_layernorm.weight"]
tune.load_state_dict(converted)
with torch.no_grad():
    fixed = (expected - tune(tokens)).abs().max().item()
print(f"with pre -> mlp_norm and post -> mlp_scale instead: max |logit difference| {fixed:.4g}")
failed = difference > 1e-3 and fixed < 1e-4
print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
