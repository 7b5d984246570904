"""transformers 4.56-4.57: DynamicCache.reset() zeroes the cached keys and values in place and keeps them.

Standalone (torch + transformers, no download): a tiny random Llama. A DynamicCache serves one prompt, is
reset(), and serves the same prompt again; its logits should equal a fresh cache's. Exits 1 while the bug is
present, 0 where reset() empties the cache (transformers 5.23 and later: huggingface/transformers#48809).
"""

import inspect
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=4.56')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (4, 56):
    print(f"cannot run: transformers {transformers.__version__}: this script drives DynamicCache.reset() of 4.56 and "
          "later", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
model = LlamaForCausalLM(config).eval()
# transformers 5.24 names the forward argument `cache`, earlier releases `past_key_values`.
CACHE_ARG = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache():
    return DynamicCache(config=config) if "config" in inspect.signature(DynamicCache.__init__).parameters \
        else DynamicCache()


def prefill_and_decode(cache, prompt, steps=2):
    """Greedy: the prompt in one call, then one token per call; each call's last logits."""
    ids, logits = prompt, []
    for _ in range(steps + 1):
        out = model(input_ids=ids, use_cache=True, **{CACHE_ARG: cache})
        logits.append(out.logits[:, -1])
        ids = out.logits[:, -1:].argmax(-1)
    return torch.cat(logits)


print(f"torch {torch.__version__}, transformers {transformers.__version__}")
# Everything under inference mode, as generation runs: reset() zeroes inference tensors in place, which torch
# refuses outside it (a different error than the one shown here).
with torch.inference_mode():
    prompt = torch.tensor([[5, 6, 7]])
    fresh = prefill_and_decode(new_cache(), prompt)

    reused = new_cache()
    prefill_and_decode(reused, prompt)
    reused.reset()
    print(f"after reset(): get_seq_length() = {reused.get_seq_length()} (a fresh cache: 0)")
    again = prefill_and_decode(reused, prompt)
    difference = (again - fresh).abs().max().item()
    print(f"the same prompt on the reset cache vs a fresh cache: max |logit difference| {difference:.3g}")

    smaller = new_cache()
    prefill_and_decode(smaller, torch.tensor([[5, 6, 7], [8, 9, 10]]))
    smaller.reset()
    try:
        prefill_and_decode(smaller, prompt)
        error = None
        print("a batch of 1 on a cache reset after a batch of 2: ran")
    except RuntimeError as exc:
        error = f"{type(exc).__name__}: {exc}"
        print(f"a batch of 1 on a cache reset after a batch of 2 raised {error}")


if reused.get_seq_length() != prompt.shape[1] + 2 or difference > 1e-4 or error:
    print("REPRODUCED: a reset DynamicCache keeps its zeroed keys and values")
    sys.exit(1)
print("not reproduced: reset() empties the cache")
