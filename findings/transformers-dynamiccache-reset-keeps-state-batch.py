"""transformers: DynamicCache.reset() keeps linear-attention / SSM states at the batch size they last served.

``Cache.reset()`` is documented as resetting the cache values while preserving the objects; for key/value
layers ``DynamicLayer.reset()`` drops its tensors (they grow by concatenation), so a reset cache serves any
batch like a fresh one. ``LinearAttentionLayer.reset()`` (Mamba, FalconMamba, FalconH1, Jamba, Qwen3-Next, ...)
only zeroes its conv and recurrent states in place: they keep the batch size they last served, and a reset
cache reused for a smaller batch raises as soon as a one-token forward takes the single-step branch
(which it does on a reset cache, since the states still exist). Exits 1 when the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache, FalconMambaConfig, FalconMambaForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

print(f"torch {torch.__version__}, transformers {transformers.__version__}")
config = FalconMambaConfig(vocab_size=512, hidden_size=64, state_size=8, num_hidden_layers=2, conv_kernel=4, expand=2,
                     time_step_rank=8)
torch.manual_seed(0)
model = FalconMambaForCausalLM(config).eval()
cache = DynamicCache(config=config)
with torch.no_grad():
    model(input_ids=torch.tensor([[5], [8], [9]]), cache=cache, use_cache=True)  # a batch of 3, one token each
    cache.reset()  # should behave like a fresh cache
    print("states after reset:", [tuple(layer.recurrent_states[0].shape) for layer in cache.layers])
    fresh = model(input_ids=torch.tensor([[5], [8]]), cache=DynamicCache(config=config), use_cache=True).logits
    try:
        reused = model(input_ids=torch.tensor([[5], [8]]), cache=cache, use_cache=True).logits  # a batch of 2
    except RuntimeError as exc:
        print(f"REPRODUCED: a reset cache reused for a batch of 2 raised RuntimeError: {exc}")
        sys.exit(1)
print(f"not reproduced: max |diff| reused vs fresh {float((reused - fresh).abs().max()):.2e}")
