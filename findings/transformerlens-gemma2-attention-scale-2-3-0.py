"""TransformerLens 2.3.0 scales Gemma-2's attention scores by 1/sqrt(224) where the model uses 1/sqrt(256).

Builds Gemma-2 from google/gemma-2-2b's released config with only its depth (2 layers) and vocabulary (512 tokens)
shrunk, seeded random weights, then the HookedTransformer TransformerLens converts from it (its official config for
google/gemma-2-2b, the same depth and vocabulary), and compares their logits on one 4-token prompt without any cache.
Needs torch, transformers and transformer-lens 2.x (HookedTransformer); no download.
Exit 1: reproduced; 0: the two agree (the fix); 2: cannot run here.
"""

import sys
from importlib import metadata

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformer_lens.loading_from_pretrained as loading
    import transformers
    from transformer_lens import HookedTransformer
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers 'transformer-lens<3')", file=sys.stderr)
    sys.exit(2)

VERSION = metadata.version("transformer-lens")
if int(VERSION.split(".")[0]) >= 3:
    print(f"cannot run: this script drives TransformerLens 2.x's HookedTransformer, not {VERSION}", file=sys.stderr)
    sys.exit(2)

# google/gemma-2-2b's config.json, but num_hidden_layers 26 -> 2 and vocab_size 256000 -> 512.
CONFIG = dict(architectures=["Gemma2ForCausalLM"], attention_bias=False, attn_logit_softcapping=50.0, bos_token_id=2,
              eos_token_id=1, final_logit_softcapping=30.0, head_dim=256, hidden_activation="gelu_pytorch_tanh",
              hidden_size=2304, intermediate_size=9216, max_position_embeddings=8192, num_attention_heads=8,
              num_hidden_layers=2, num_key_value_heads=4, pad_token_id=0, query_pre_attn_scalar=256,
              rms_norm_eps=1e-06, rope_theta=10000.0, sliding_window=4096, vocab_size=512)
TOLERANCE = 1e-3  # float32 rounding between the two implementations is ~1e-5 here

torch.manual_seed(0)
model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**CONFIG, attn_implementation="eager")).eval()
with torch.no_grad():
    for parameter in model.parameters():  # weights large enough that a wrong scale moves the logits visibly
        parameter.normal_(0.0, 0.2)

cfg = loading.get_pretrained_model_config("google/gemma-2-2b", fold_ln=False, device="cpu", dtype=torch.float32,
                                          local_files_only=True)
cfg.n_layers, cfg.d_vocab, cfg.d_vocab_out = 2, 512, 512
cfg.tokenizer_name = None  # no tokenizer: nothing to download
state = loading.get_pretrained_state_dict("google/gemma-2-2b", cfg, hf_model=model, dtype=torch.float32)
hooked = HookedTransformer(cfg, move_to_device=False)
hooked.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                   fold_value_biases=False, refactor_factored_attn_matrices=False)
hooked.eval()

tokens = torch.tensor([[5, 6, 7, 8]])
with torch.no_grad():
    expected = model(tokens).logits
    got = hooked(tokens)
difference = float((expected - got).abs().max())
print(f"TransformerLens {VERSION}, transformers {transformers.__version__}")
print(f"attention scale: TransformerLens divides by {cfg.attn_scale:.4f}, the HF model by "
      f"{CONFIG['query_pre_attn_scalar'] ** 0.5:.4f} (query_pre_attn_scalar {CONFIG['query_pre_attn_scalar']})")
print(f"uncached logits, HookedTransformer vs Gemma2ForCausalLM: max |difference| {difference:.4g} "
      f"(tolerance {TOLERANCE})")
if difference > TOLERANCE:
    print("REPRODUCED")
    sys.exit(1)
print("not reproduced: the two agree")
sys.exit(0)
