"""TransformerLens 2.13-3.0: HookedTransformer.generate() on a left-padded batch attends to the padding.

generate() builds each step's attention mask from `torch.zeros(...)` (a tensor of zeros standing in for the tokens)
instead of the prompt's tokens, so the pad tokens of a left-padded batch are never masked: a shorter prompt
generates from different logits than it does alone, with the KV cache and without it.

Needs only torch, transformers (for an in-memory tokenizer) and transformer-lens. Random weights, no downloads.
Run:  python transformerlens-generate-ignores-left-padding-2-13.py     (exits 1 while the bug is present)
"""
import sys
from importlib.metadata import version

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import PreTrainedTokenizerFast
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers 'transformer-lens<4')", file=sys.stderr)
    sys.exit(2)

torch.manual_seed(0)
print("transformer-lens", version("transformer-lens"), "torch", torch.__version__)
PAD = 3  # the tokenizer's pad token: TransformerLens reads leading pad tokens as left padding
vocab = {f"t{i}": i for i in range(32)}
words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, bos_token="t1", eos_token="t2", pad_token=f"t{PAD}",
                                    unk_token="t0", padding_side="left", add_bos_token=True,
                                    name_or_path="word-level")  # both keep TransformerLens from reloading it by name
cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4, d_mlp=128, d_vocab=32,
                              act_fn="gelu", normalization_type="LN", positional_embedding_type="rotary",
                              device="cpu", seed=0, default_prepend_bos=False)
# default_padding_side="left": TransformerLens reads leading pad tokens as padding (it sets the tokenizer's side).
model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="left").eval()


def generate(ids, use_cache):
    """Greedy generate of 3 tokens: the sequences and the first step's logits (recorded by a hook)."""
    steps = []
    hook = model.unembed.register_forward_hook(lambda _m, _i, out: steps.append(out[:, -1].clone()))
    try:
        with torch.no_grad():
            sequences = model.generate(input=ids, max_new_tokens=3, do_sample=False, stop_at_eos=False,
                                       use_past_kv_cache=use_cache, verbose=False)
    finally:
        hook.remove()
    return sequences, steps[0]


# Two prompts: [5, 6, 7] left-padded by two, and [8, 9, 10, 11, 12].
batch = torch.tensor([[PAD, PAD, 5, 6, 7], [8, 9, 10, 11, 12]])
FAILED = []
for use_cache in (True, False):
    batched, batched_first = generate(batch, use_cache)
    alone, alone_first = generate(torch.tensor([[5, 6, 7]]), use_cache)
    worst = float((batched_first[0] - alone_first[0]).abs().max())
    print(f"use_past_kv_cache={use_cache}: the padded prompt's first step, batched vs alone: max |logit difference| "
          f"{worst:.4g}; tokens batched {batched[0, 5:].tolist()}, alone {alone[0, 3:].tolist()}")
    if worst > 1e-4:
        FAILED.append(f"use_past_kv_cache={use_cache}")
print("REPRODUCED: " + ", ".join(FAILED) if FAILED else "not reproduced: the padding is masked")
raise SystemExit(1 if FAILED else 0)
