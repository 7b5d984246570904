"""transformers 4.46: generate(cache_implementation="sliding_window") raises on any prompt longer than the window.

SlidingWindowCache keeps `sliding_window` slots; a prefill longer than that returns all of the prompt's keys
(cache_utils.py, SlidingWindowCache.update), but Mistral's _update_causal_mask sizes the mask to the cache's
`max_cache_len` (the window). The eager attention then adds a mask as wide as the window to scores as wide as the
prompt: RuntimeError. A prompt of the window's length or shorter works.

Needs only torch and transformers. Random weights, no downloads, no tokenizer.
Run:  python transformers-sliding-window-cache-long-prompt-4-46.py   (exits 1 while the bug is present)
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import MistralConfig, MistralForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

print("transformers", transformers.__version__, "torch", torch.__version__)
WINDOW = 8
config = MistralConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, sliding_window=WINDOW, initializer_range=0.2,
                       attn_implementation="eager", pad_token_id=0, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
model = MistralForCausalLM(config).eval()
FAILED = []
for length in (WINDOW - 1, WINDOW, WINDOW + 1, WINDOW + 4):
    ids = torch.arange(3, 3 + length).unsqueeze(0)
    for cache in (None, "sliding_window"):
        extra = {"cache_implementation": cache} if cache else {}
        try:
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, min_new_tokens=2,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                                 **extra)
        except RuntimeError as exc:  # the failure being shown (a mask as wide as the window)
            print(f"prompt of {length} tokens, {cache or 'default'} cache: generate raised {type(exc).__name__}: {exc}")
            FAILED.append(f"{cache} {length}")
            continue
        with torch.no_grad():
            full = model(out.sequences[:, :-1], use_cache=False).logits[0, length - 1:]
        worst = float((torch.cat(out.logits) - full).abs().max())
        print(f"prompt of {length} tokens, {cache or 'default'} cache: generate's logits vs one uncached pass: "
              f"max |diff| {worst:.3g} (logit scale {float(full.abs().max()):.3g})")
        if worst > 1e-3:
            FAILED.append(f"{cache} {length}")
print("REPRODUCED: " + ", ".join(FAILED) if FAILED else "not reproduced")
raise SystemExit(1 if FAILED else 0)
