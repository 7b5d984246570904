"""transformers 4.57: MPT builds its causal mask for the tokens so far, not for a static cache's slots.

Standalone (torch + transformers, no download): a tiny random MPT. transformers 4.57 builds a StaticCache for
any model (`generate(cache_implementation="static")`, or a StaticCache passed to forward), and MPT's forward
makes its mask with `_prepare_4d_causal_attention_mask` over `get_seq_length()` + new tokens, while the keys it
attends to span the whole static cache. A one-token prompt's mask broadcasts over every slot, so the empty
slots are attended silently; longer masks raise. Exits 1 while the bug is present, 0 where it is not.
"""

import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache, MptConfig, MptForCausalLM, StaticCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
config = MptConfig(vocab_size=64, d_model=32, n_heads=2, n_layers=2, max_seq_len=64, pad_token_id=0,
                   use_cache=True)  # MptConfig defaults to use_cache=False: generate() would then ignore the cache flag
model = MptForCausalLM(config).eval()
print(f"torch {torch.__version__}, transformers {transformers.__version__}")


def decode(cache, prompt, steps=2, mask_slots=None, positions=True):
    """The prompt in one call, then the greedy token one call at a time; each call's last logits. The mask covers
    the tokens so far (as generate() passes it), or ``mask_slots`` slots, zero past the tokens so far (as Bloom
    and Falcon take it with a static cache, building their ALiBi from it). ``positions``: pass ``cache_position``
    (generate() does; Llama and most 4.57 models count it from the cache when it is not passed, MPT does not)."""
    ids, seen, logits = prompt, prompt.shape[1], []
    for _ in range(steps + 1):
        mask = torch.ones(1, seen, dtype=torch.long)
        if mask_slots:
            mask = torch.cat([mask, torch.zeros(1, mask_slots - seen, dtype=torch.long)], 1)
        where = {"cache_position": torch.arange(seen - ids.shape[1], seen)} if positions else {}
        out = model(input_ids=ids, past_key_values=cache, attention_mask=mask, use_cache=True, **where)
        logits.append(out.logits[:, -1])
        ids, seen = out.logits[:, -1:].argmax(-1), seen + 1
    return torch.cat(logits)


failed = []
with torch.inference_mode():
    for prompt in (torch.tensor([[5]]), torch.tensor([[5, 6, 7]])):
        dynamic = decode(DynamicCache(), prompt)
        slots = prompt.shape[1] + 2
        for mask_slots, positions, mask_name in ((None, True, "mask of the tokens so far"),
                                                 (slots, True, "mask of the cache's slots"),
                                                 (slots, False, "mask of the cache's slots, no cache_position")):
            name = f"StaticCache, {prompt.shape[1]}-token prompt, {mask_name}"
            try:
                static = decode(StaticCache(config=config, max_cache_len=slots), prompt, mask_slots=mask_slots,
                                positions=positions)
            except (RuntimeError, ValueError) as exc:
                failed.append(name)
                print(f"{name}: raised {type(exc).__name__}: {exc}")
                continue
            difference = (static - dynamic).abs().max(-1).values
            print(f"{name}: max |logit difference| vs DynamicCache per call {[round(d, 4) for d in difference.tolist()]}")
            if difference.max() > 1e-4:
                failed.append(name)

    prompt = torch.tensor([[5]])
    greedy = dict(max_new_tokens=2, do_sample=False, output_logits=True, return_dict_in_generate=True,
                  pad_token_id=0)
    default = model.generate(prompt, **greedy)
    try:
        static = model.generate(prompt, cache_implementation="static", **greedy)
        difference = max((a - b).abs().max().item() for a, b in zip(default.logits, static.logits))
        print(f"generate(cache_implementation='static') vs generate(): max |logit difference| {difference:.4g}")
        if difference > 1e-4:
            failed.append("generate(cache_implementation='static')")
    except (RuntimeError, ValueError) as exc:
        failed.append("generate(cache_implementation='static')")
        print(f"generate(cache_implementation='static') raised {type(exc).__name__}: {exc}")

if failed:
    print("REPRODUCED: " + "; ".join(failed))
    sys.exit(1)
print("not reproduced: MPT's static-cache decoding matches the dynamic cache")
