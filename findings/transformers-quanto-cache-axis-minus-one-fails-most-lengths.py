"""transformers 5.24 + optimum-quanto 0.2.7: a quanto QuantizedCache with axis -1 (which it accepts) raises unless the
group size divides batch x heads x tokens of every tensor it quantizes.

Standalone: torch + transformers + optimum-quanto. Exits 1 while the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import optimum.quanto  # noqa: F401 - the backend under test
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers optimum-quanto)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)  # head_dim 16, 2 key/value heads
model = LlamaForCausalLM(config).eval()
print(f"torch {torch.__version__}, transformers {transformers.__version__}")

failed = []
with torch.inference_mode():
    for axis in (0, -1):
        for length in (1, 2, 3, 4, 8):
            prompt = torch.randint(0, 128, (1, length))
            cache_config = {"backend": "quanto", "nbits": 4, "axis_key": axis, "axis_value": axis,
                            "q_group_size": 16, "residual_length": 2}
            try:
                model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=3, do_sample=False,
                               cache_implementation="quantized", cache_config=cache_config, pad_token_id=0)
                print(f"axis {axis:2d}, prompt of {length}: generate ok")
            except ValueError as exc:
                print(f"axis {axis:2d}, prompt of {length}: ValueError: {exc}")
                failed.append((axis, length))

print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
