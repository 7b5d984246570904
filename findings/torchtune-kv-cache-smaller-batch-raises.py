"""torchtune 0.6.1: caches set up for N rows raise a shape error for a batch of fewer rows, after reset_caches().

``KVCache.update`` documents a ValueError only for a batch LARGER than the one the caches were set up for; a
smaller batch (an evaluation loop's last batch) fails inside attention with a RuntimeError instead.
Standalone: torch + torchtune (+ torchao). Exits 1 while the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import torchtune
    from torchtune.generation import get_causal_mask_from_padding_mask, get_position_ids_from_padding_mask
    from torchtune.models.llama3 import llama3
except ImportError as error:
    print(f"cannot run: {error} (pip install torch torchtune==0.6.1 torchao==0.10.0)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
print(f"torch {torch.__version__}, torchtune {torchtune.__version__}")
model = llama3(vocab_size=128, num_layers=1, num_heads=4, num_kv_heads=2, embed_dim=64, max_seq_len=64,
               intermediate_dim=128).eval()


def forward(tokens, length):
    padding = torch.ones_like(tokens, dtype=torch.bool)
    mask = get_causal_mask_from_padding_mask(padding, target_seq_len=length)
    return model(tokens, mask=mask, input_pos=get_position_ids_from_padding_mask(padding))


failed = []
with torch.inference_mode():
    model.setup_caches(batch_size=2, dtype=torch.float32, decoder_max_seq_len=4)
    forward(torch.tensor([[3, 4], [5, 6]]), 4)  # the configured batch: fine
    for rows in (1,):
        model.reset_caches()
        try:
            forward(torch.tensor([[3, 4]] * rows), 4)
            print(f"batch of {rows} on caches set up for 2, after reset_caches(): ok")
        except RuntimeError as exc:  # the smaller batch fails inside attention (the bug)
            print(f"batch of {rows} on caches set up for 2, after reset_caches(): {type(exc).__name__}: {exc}")
            failed.append(rows)
print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
