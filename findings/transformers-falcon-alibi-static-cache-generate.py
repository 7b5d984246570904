"""transformers: generate() with a static cache raises for Falcon models that use ALiBi.

``FalconForCausalLM.generate(..., cache_implementation="static")`` on a Falcon config with ``alibi=True``
(the falcon-rw family) raises on the first step: ``FalconModel.forward`` builds the ALiBi bias from the
2-D attention mask (as long as the tokens so far) and adds it onto the causal mask, which a static cache
makes as long as the whole cache, so the two shapes disagree (``RuntimeError: The size of tensor a (4)
must match the size of tensor b (3)``; with fuzzkv's falcon-rw config, ``ValueError: too many values to
unpack``). The dynamic cache works; so does Bloom (ALiBi too) with a static cache. Exits 1 when the bug
is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import FalconConfig, FalconForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

print(f"torch {torch.__version__}, transformers {transformers.__version__}")
config = FalconConfig(vocab_size=512, hidden_size=64, num_attention_heads=4, num_hidden_layers=2, alibi=True,
                      new_decoder_architecture=False, multi_query=False, parallel_attn=False, bias=True)
torch.manual_seed(0)
model = FalconForCausalLM(config).eval()
ids = torch.tensor([[5, 6, 7]])
with torch.no_grad():
    dynamic = model.generate(ids, max_new_tokens=2, do_sample=False, cache_implementation="dynamic", pad_token_id=0)
    print("dynamic cache:", dynamic.tolist())
    try:
        static = model.generate(ids, max_new_tokens=2, do_sample=False, cache_implementation="static", pad_token_id=0)
    except (ValueError, RuntimeError) as exc:
        print(f"REPRODUCED: generate(cache_implementation='static') raised {type(exc).__name__}: {exc}")
        sys.exit(1)
print("not reproduced: static cache:", static.tolist())
