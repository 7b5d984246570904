"""transformers 5.24 + HQQ 0.2.8: an HQQ QuantizedCache with 1, 2 or 3 bits (which it accepts) raises unless the number of
quantization groups is a multiple of HQQ's bit-packing factor.

Standalone: torch + transformers + hqq. Exits 1 while the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import hqq  # noqa: F401 - the backend under test
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, QuantizedCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers hqq)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)  # head_dim 16, 2 key/value heads
model = LlamaForCausalLM(config).eval()
print(f"torch {torch.__version__}, transformers {transformers.__version__}")

failed = []
prompt = torch.randint(0, 128, (1, 3))
with torch.inference_mode():
    for nbits in (8, 4, 3, 2, 1):
        cache = QuantizedCache(backend="hqq", config=config, nbits=nbits, axis_key=1, axis_value=1, q_group_size=16,
                               residual_length=1)
        try:
            for start in range(3):  # the prompt one token at a time: quantized, then dequantized at the next step
                model(input_ids=prompt[:, start:start + 1], past_key_values=cache, use_cache=True)
            print(f"{nbits} bits: 3 cached steps ok")
        except RuntimeError as exc:
            print(f"{nbits} bits: RuntimeError: {exc}")
            failed.append(nbits)

print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
