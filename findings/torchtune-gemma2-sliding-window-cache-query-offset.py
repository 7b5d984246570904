"""torchtune 0.6.1: Gemma-2's sliding-window layers attend to the wrong keys once a KV cache is in use.

``Gemma2Attention`` builds its sliding-window band with ``torch.triu``/``torch.tril`` over the mask's own row
index. Without a cache, row i is position i. With a cache, the mask is [batch, new tokens, cache slots] and row
0 is the first NEW token, wherever it sits: a decode step at position p >= window sees cache slots 0..window-1
(the oldest keys, its own key excluded) instead of the last ``window`` ones. Standalone: torch + torchtune
(+ torchao). Exits 1 while the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import torchtune
    from torchtune.generation import get_causal_mask_from_padding_mask, get_position_ids_from_padding_mask
    from torchtune.models.gemma2 import gemma2
except ImportError as error:
    print(f"cannot run: {error} (pip install torch torchtune==0.6.1 torchao==0.10.0)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
print(f"torch {torch.__version__}, torchtune {torchtune.__version__}")
WINDOW = 4
model = gemma2(vocab_size=128, num_layers=1, num_heads=4, head_dim=16, num_kv_heads=2, embed_dim=64,
               intermediate_dim=128, max_seq_len=64, sliding_window_size=WINDOW).eval()  # layer 0 slides
with torch.no_grad():
    for parameter in model.parameters():
        parameter.normal_(0.0, 0.3)  # torchtune's default init is too flat to move a logit visibly

tokens = torch.tensor([[5, 17, 9, 33, 2, 71, 8]])  # 7 tokens: steps 4, 5 and 6 are past the window
total = tokens.shape[1]
padding = torch.ones_like(tokens, dtype=torch.bool)
positions = get_position_ids_from_padding_mask(padding)
with torch.inference_mode():
    uncached = model(tokens, mask=get_causal_mask_from_padding_mask(padding), input_pos=positions)
    model.setup_caches(batch_size=1, dtype=torch.float32, decoder_max_seq_len=total)
    masks = get_causal_mask_from_padding_mask(padding, target_seq_len=total)
    prompt = WINDOW  # prefill the first WINDOW tokens, then decode one token at a time
    steps = [model(tokens[:, :prompt], mask=masks[:, :prompt], input_pos=positions[:, :prompt])]
    for p in range(prompt, total):
        steps.append(model(tokens[:, p:p + 1], mask=masks[:, p:p + 1], input_pos=positions[:, p:p + 1]))
    cached = torch.cat(steps, dim=1)

failed = False
for p in range(total):
    difference = (cached[0, p] - uncached[0, p]).abs().max().item()
    print(f"position {p}: max |logit difference| cached vs uncached {difference:.3g}")
    failed |= p >= WINDOW and difference > 1e-3
print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
