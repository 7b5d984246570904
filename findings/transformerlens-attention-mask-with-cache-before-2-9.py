"""TransformerLens before 2.9: an attention mask passed together with a KV cache is never stored in the cache.

HookedTransformer.forward documents `past_kv_cache` as "If passed, we're doing caching and attention_mask will be
stored in the cache", but only a mask it infers itself (from the pad token) is appended; an explicit
`attention_mask` bypasses the cache's `append_attention_mask`. The next cached call then has no mask for the cached
positions: with rotary embeddings it raises, with learned absolute positions it silently attends wrongly.

Needs only torch and transformer-lens (2.x). Random weights, no downloads, no tokenizer.
Run:  python transformerlens-attention-mask-with-cache-before-2-9.py     (exits 1 while the bug is present)
"""
import sys
from importlib.metadata import version

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformer-lens<3')", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
print("transformer-lens", version("transformer-lens"), "torch", torch.__version__)
FAILED = []
# Two rows, the first left-padded by two: prompts [5, 6, 7] and [8, 9, 10, 11, 12], then one decoded token each.
ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]])
mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
step = torch.tensor([[13], [14]])
full_ids, full_mask = torch.cat([ids, step], 1), torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], 1)

for positions in ("rotary", "standard"):
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4, d_mlp=128, d_vocab=32,
                                  act_fn="gelu", normalization_type="LN", positional_embedding_type=positions,
                                  device="cpu", seed=0)
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():
        uncached = model(full_ids, attention_mask=full_mask)[:, -1]
        cache = HookedTransformerKeyValueCache.init_cache(cfg, "cpu", 2)
        model(ids, attention_mask=mask, past_kv_cache=cache)
        stored = cache.previous_attention_mask.shape[1]
        print(f"{positions}: the cache holds {cache[0].past_keys.shape[1]} positions and a mask of {stored}")
        try:
            cached = model(step, attention_mask=full_mask[:, -1:], past_kv_cache=cache)[:, -1]
        except RuntimeError as exc:  # the failure being shown: no mask for the cached positions
            print(f"{positions}: the cached decode step with the new token's mask raised {type(exc).__name__}: {exc}")
            FAILED.append(positions)
            continue
        worst = float((cached - uncached).abs().max())
        print(f"{positions}: cached decode step vs one uncached pass: max |logit difference| {worst:.4g}")
        if worst > 1e-4:
            FAILED.append(positions)
print("REPRODUCED: " + ", ".join(FAILED) if FAILED else "not reproduced: the mask is stored (TransformerLens >= 2.9)")
raise SystemExit(1 if FAILED else 0)
