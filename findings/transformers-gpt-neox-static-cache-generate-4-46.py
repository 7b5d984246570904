"""transformers 4.46: GPT-NeoX's generate(cache_implementation="static") gives wrong logits or raises.

Needs only torch and transformers. Random weights, no downloads, no tokenizer.
Run:  python transformers-gpt-neox-static-cache-generate-4-46.py   (exits 1 while the bug is present)
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

print("transformers", transformers.__version__, "torch", torch.__version__)
config = GPTNeoXConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, initializer_range=0.2, attn_implementation="eager",
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
model = GPTNeoXForCausalLM(config).eval()
FAILED = []
for prompt, new in (([5], 1), ([5], 2), ([5, 6], 1), ([5, 6, 7], 3)):
    ids = torch.tensor([prompt])
    for cache in (None, "static"):
        extra = {"cache_implementation": cache} if cache else {}
        try:
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                                 **extra)
        except RuntimeError as exc:  # the failure being shown (the static cache's mask or positions mismatch)
            print(f"prompt {prompt}, {new} new, {cache or 'default'} cache: generate raised {type(exc).__name__}: {exc}")
            FAILED.append(f"{cache} {prompt}+{new}")
            continue
        with torch.no_grad():
            full = model(out.sequences[:, :-1], use_cache=False).logits[0, len(prompt) - 1:]
        worst = float((torch.cat(out.logits) - full).abs().max())
        print(f"prompt {prompt}, {new} new, {cache or 'default'} cache: generate's logits vs one uncached pass: "
              f"max |diff| {worst:.3g} (logit scale {float(full.abs().max()):.3g})")
        if worst > 1e-3:
            FAILED.append(f"{cache} {prompt}+{new}")
print("REPRODUCED: " + ", ".join(FAILED) if FAILED else "not reproduced")
raise SystemExit(1 if FAILED else 0)
