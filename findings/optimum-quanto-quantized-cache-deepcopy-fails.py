"""optimum-quanto 0.2.7: a transformers QuantizedCache with the quanto backend cannot be deep-copied.

Standalone: torch + transformers + optimum-quanto. Exits 1 while the bug is present.
"""
import copy
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import optimum.quanto  # noqa: F401 - the backend under test
    import torch
    import transformers
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, QuantizedCache
    from transformers.utils import is_optimum_quanto_available
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers optimum-quanto)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)
model = LlamaForCausalLM(config).eval()
print(f"torch {torch.__version__}, transformers {transformers.__version__}, optimum-quanto installed: "
      f"{is_optimum_quanto_available()}")

CACHES = {"dynamic": lambda: DynamicCache(config=config), "fp8": lambda: QuantizedCache(backend="fp8", config=config),
          "quanto": lambda: QuantizedCache(backend="quanto", config=config, nbits=4, q_group_size=16,
                                           residual_length=1)}
failed = []
prompt = torch.randint(0, 128, (1, 4))
with torch.inference_mode():
    for name, build in CACHES.items():
        cache = build()
        model(input_ids=prompt, past_key_values=cache, use_cache=True)  # a prefix cache, as in prefix reuse
        try:
            copy.deepcopy(cache)
            print(f"{name}: copy.deepcopy(prefix cache): ok")
        except RuntimeError as exc:  # quanto's tensors refuse the copy (the bug); the other caches must copy
            if name != "quanto":
                raise
            print(f"{name}: copy.deepcopy(prefix cache): {type(exc).__name__}: {str(exc)[:200]}")
            failed.append(name)

print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
