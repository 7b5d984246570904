"""transformers 4.46: Gemma-2's generate(cache_implementation="static") attends to the static cache's empty slots.

Gemma-2 declares static-cache support (Gemma2PreTrainedModel._supports_static_cache = True), but its
_update_causal_mask sizes the 4-D mask to the cache's length only for a HybridCache; for any other cache, a
StaticCache included, it uses the 2-D attention mask's length. The eager attention then adds a mask as wide as the
tokens so far to scores as wide as the whole static cache: a one-column mask broadcasts over every slot, so the first
token also attends to the cache's still-empty (zero) slots and its logits are wrong; a wider mask raises.

Needs only torch and transformers. Random weights, no downloads, no tokenizer.
Run:  python transformers-gemma2-static-cache-generate-mask-4-46.py   (exits 1 while the bug is present)
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import Gemma2Config, Gemma2ForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

print("transformers", transformers.__version__, "torch", torch.__version__)
config = Gemma2Config(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, sliding_window=8, initializer_range=0.2,
                      attn_implementation="eager", pad_token_id=0, bos_token_id=1, eos_token_id=2)
torch.manual_seed(0)
model = Gemma2ForCausalLM(config).eval()
FAILED = []
for prompt, new in (([5], 1), ([5], 2), ([5, 6, 7], 3)):
    ids = torch.tensor([prompt])
    for cache in ("hybrid", "static"):
        try:
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, output_logits=True, return_dict_in_generate=True,
                                 cache_implementation=cache, pad_token_id=0)
        except RuntimeError as exc:  # the failure being shown (a wider mask raises)
            print(f"prompt {prompt}, {new} new, {cache}: generate raised {type(exc).__name__}: {exc}")
            FAILED.append(f"{cache} {prompt}+{new}")
            continue
        with torch.no_grad():  # one uncached forward over the generated sequence: the logits every step should give
            full = model(out.sequences[:, :-1], use_cache=False).logits[0, len(prompt) - 1:]
        steps = torch.cat(out.logits)
        worst = float((steps - full).abs().max())
        print(f"prompt {prompt}, {new} new, {cache}: generate's logits vs one uncached pass: max |diff| {worst:.3g}"
              f" (logit scale {float(full.abs().max()):.3g})")
        if worst > 1e-3:
            FAILED.append(f"{cache} {prompt}+{new}")
print("REPRODUCED: " + ", ".join(FAILED) if FAILED else "not reproduced")
raise SystemExit(1 if FAILED else 0)
