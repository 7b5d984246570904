"""transformers: GPT-Neo's local (windowed) attention layers compute the wrong window with a StaticCache.

``GPTNeoSelfAttention._attn`` cuts its causal/local mask out of a fixed ``bias`` buffer by the key length:
``self.bias[:, :, key_length - query_length : key_length, :key_length]``. That assumes the keys are exactly
the tokens seen so far, which holds for a DynamicCache. A StaticCache returns all ``max_cache_len`` slots,
so the rows taken are those of later positions: each query of a ``local`` layer gets the window of a query
``max_cache_len - seen`` positions further on and loses that many of its oldest keys. Global layers are
unaffected (the static cache's 4-D mask hides the empty slots). ``generate(cache_implementation="static")``
hits it too: it sizes the cache to ``max_length - 1``, so every step but the last is wrong once the prompt
is as long as the window. Exits 1 when the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache, GPTNeoConfig, GPTNeoForCausalLM, StaticCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
config = GPTNeoConfig(vocab_size=512, hidden_size=64, num_layers=2, attention_types=[[["global", "local"], 1]],
                      num_heads=4, window_size=8, max_position_embeddings=128, bos_token_id=511, eos_token_id=511)
torch.manual_seed(0)
model = GPTNeoForCausalLM(config).eval()
with torch.no_grad():  # fuzzkv's sensitive init: transformers' std 0.02 makes logits nearly equal
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.normal_(0.0, 0.2 * (64 / module.weight.shape[1]) ** 0.5)

ids = torch.arange(5, 17).unsqueeze(0)  # 12 tokens, window 8
PREFILL = 6


def fmt(values):
    return "[" + ", ".join(f"{v:.2e}" for v in values) + "]"


def cached(cache):
    steps = [model(input_ids=ids[:, :PREFILL], cache=cache, use_cache=True).logits]
    for position in range(PREFILL, ids.shape[1]):
        steps.append(model(input_ids=ids[:, position:position + 1], cache=cache, use_cache=True).logits)
    return torch.cat(steps, 1)


worst_static, worst_dynamic = 0.0, 0.0
for dtype in (torch.float32, torch.float64):
    model = model.to(dtype)
    with torch.no_grad():
        one_pass = model(input_ids=ids, use_cache=False).logits
        scale = one_pass.abs().max().item()
        for name, cache in (("DynamicCache", DynamicCache(config=config)),
                            ("StaticCache(max_cache_len=12)", StaticCache(config=config, max_cache_len=12))):
            diff = (cached(cache) - one_pass).abs().amax(-1)[0]
            print(f"{str(dtype)[6:]} {name}: prefill {PREFILL}, then one token at a time vs one pass, "
                  f"max |logit diff| per position: {fmt(diff.tolist())}; logit scale {scale:.2f}")
            if name.startswith("Static"):
                worst_static = max(worst_static, diff.max().item())
            else:
                worst_dynamic = max(worst_dynamic, diff.max().item())
        for impl in ("dynamic", "static"):
            if hasattr(model, "_previous_max_cache_length"):
                del model._previous_max_cache_length  # a fresh model: generate() reuses the largest earlier size
            out = model.generate(ids[:, :9], max_new_tokens=3, min_new_tokens=3, do_sample=False, pad_token_id=0,
                                 cache_implementation=impl, output_logits=True, return_dict_in_generate=True)
            reference = model(input_ids=out.sequences, use_cache=False).logits[:, 8:11]
            diff = (torch.stack(out.logits, 1) - reference).abs().amax(-1)[0]
            print(f"{str(dtype)[6:]} generate(cache_implementation={impl!r}), prompt 9, 3 new: tokens "
                  f"{out.sequences[0, 9:].tolist()}, step logits vs one uncached pass: {fmt(diff.tolist())}")
            if impl == "static":
                worst_static = max(worst_static, diff.max().item())
print("(GPT-Neo computes attention scores in float32 even in a float64 model, hence ~1e-6 on the dynamic cache.)")
if worst_static > 1e-2 and worst_dynamic < 1e-3:
    print(f"REPRODUCED: static cache max |logit diff| {worst_static:.3g}, dynamic cache {worst_dynamic:.2g}")
    sys.exit(1)
print("not reproduced")
