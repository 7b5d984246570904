"""transformers 5.24: QuantizedCache.batch_select_indices (and crop) act on the unquantized residual only.

Standalone: torch + transformers (FP8 backend, built in) [+ optimum-quanto for the quanto rows]. Exits 1 while the
bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM, QuantizedCache
    from transformers.utils import is_optimum_quanto_available
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2)
model = LlamaForCausalLM(config).eval()
print(f"torch {torch.__version__}, transformers {transformers.__version__}")

SETTINGS = [("fp8", {})]
if is_optimum_quanto_available():
    SETTINGS += [("quanto", {"nbits": 4, "q_group_size": 16, "residual_length": 1}),  # residual flushed
                 ("quanto", {"nbits": 4, "q_group_size": 16, "residual_length": 8})]  # residual kept

failed = []
prompt = torch.randint(0, 128, (2, 3))  # two rows, 3 tokens
with torch.inference_mode():
    for backend, options in SETTINGS:
        label = f"{backend} {options}"
        cache = QuantizedCache(backend=backend, config=config, **options)
        model(input_ids=prompt, past_key_values=cache, use_cache=True)
        model(input_ids=prompt[:, -1:], past_key_values=cache, use_cache=True)  # one decoded token
        try:
            cache.batch_select_indices(torch.tensor([0]))  # keep row 0
            out = model(input_ids=prompt[:1, :1], past_key_values=cache, use_cache=True)
            print(f"{label}: batch_select_indices then a step: ok, logits {tuple(out.logits.shape)}")
        except (IndexError, RuntimeError) as exc:  # the bug: the selected cache no longer matches its rows
            print(f"{label}: batch_select_indices then a step: {type(exc).__name__}: {exc}")
            failed.append(label)

print("REPRODUCED" if failed else "not reproduced")
raise SystemExit(1 if failed else 0)
