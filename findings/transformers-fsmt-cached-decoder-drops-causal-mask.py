"""transformers' FSMT builds its decoder's causal mask only for a call without a cache: a cached call over several
decoder tokens lets each attend to the ones after it, and a call on a static cache attends to its empty slots.

Builds a tiny FSMT (one layer per stack, seeded random weights), encodes 3 tokens, then compares the decoder's logits
over a 3-token decoder prompt computed (a) by the plain uncached forward, (b) in one cached call (a DynamicCache
prefill, as generate() makes it) and (c) one token at a time on a StaticCache. Needs torch and transformers; no
download. Exit 1: reproduced; 0: every path agrees (the fix); 2: cannot run here.
"""

import inspect
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache, EncoderDecoderCache, FSMTConfig, FSMTForConditionalGeneration, StaticCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=4.56')", file=sys.stderr)
    sys.exit(2)
if tuple(int(part) for part in transformers.__version__.split(".")[:2]) < (4, 56):
    print(f"cannot run: transformers {transformers.__version__}: this script builds its caches from a config, as the "
          "layered caches of 4.56 and later are built", file=sys.stderr)
    sys.exit(2)

TOLERANCE = 1e-3  # float32 rounding between these paths is ~1e-6 here
CONFIG = dict(langs=["en", "de"], src_vocab_size=64, tgt_vocab_size=64, d_model=32, encoder_layers=1,
              decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
              decoder_ffn_dim=64, max_position_embeddings=64)

torch.manual_seed(0)
model = FSMTForConditionalGeneration(FSMTConfig(**CONFIG)).eval()
with torch.no_grad():
    for parameter in model.parameters():  # weights large enough that a wrong mask moves the logits visibly
        parameter.normal_(0.0, 0.2)

# transformers 5.24 renamed the forward's ``past_key_values`` to ``cache``
KEYWORD = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
encoder_ids = torch.tensor([[5, 6, 7]])
decoder_ids = torch.tensor([[2, 9, 10]])  # the decoder start token (eos), then two tokens
config = model.config


def cache(kind):
    if kind == "static":
        return EncoderDecoderCache(StaticCache(config=config, max_cache_len=8),
                                   StaticCache(config=config, max_cache_len=encoder_ids.shape[1]))
    return EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))


with torch.no_grad():
    uncached = model(input_ids=encoder_ids, decoder_input_ids=decoder_ids, use_cache=False).logits
    encoded = model.get_encoder()(input_ids=encoder_ids)
    one_call = model(encoder_outputs=encoded, decoder_input_ids=decoder_ids, use_cache=True,
                     **{KEYWORD: cache("dynamic")}).logits
    static, steps = cache("static"), []
    for position in range(decoder_ids.shape[1]):
        out = model(encoder_outputs=encoded, decoder_input_ids=decoder_ids[:, position:position + 1], use_cache=True,
                    **{KEYWORD: static})
        steps.append(out.logits)
    token_by_token = torch.cat(steps, 1)

print(f"transformers {transformers.__version__}")
failed = False
for label, got in (("one cached call over 3 decoder tokens", one_call), ("token by token on a StaticCache",
                                                                          token_by_token)):
    per_position = (got - uncached).abs().amax(-1)[0]
    worst = float(per_position.max())
    print(f"{label} vs the uncached forward: max |logit difference| {worst:.4g} per position "
          f"{[round(float(d), 4) for d in per_position]}", "REPRODUCED" if worst > TOLERANCE else "not reproduced")
    failed |= worst > TOLERANCE
sys.exit(1 if failed else 0)
