"""transformers' LED and NLLB-MoE decoders go wrong on a static cache for a one-token call, each in its own way:
LED builds no causal mask for a call of one token (so the token attends to the static cache's empty slots), and
NLLB-MoE's router reads the current tokens' padding from the tail of the last row of the 4-D causal mask (on a
static cache those are empty slots, masked, so the current token is taken for padding and routed to no expert).

Builds each tiny model (one layer per stack, seeded random weights), encodes 3 tokens, and feeds a 3-token decoder
prompt one token at a time into (a) a DynamicCache (the control) and (b) a StaticCache, as generate() does with
cache_implementation="static", comparing each step's logits with one uncached forward. Needs torch and transformers;
no download. Exit 1: reproduced; 0: every path agrees (the fix); 2: cannot run here.
"""

import inspect
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import (DynamicCache, EncoderDecoderCache, LEDConfig, LEDForConditionalGeneration,
                              NllbMoeConfig, NllbMoeForConditionalGeneration, StaticCache)
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=4.56')", file=sys.stderr)
    sys.exit(2)
if tuple(int(part) for part in transformers.__version__.split(".")[:2]) < (4, 56):
    print(f"cannot run: transformers {transformers.__version__}: this script builds its caches from a config, as the "
          "layered caches of 4.56 and later are built", file=sys.stderr)
    sys.exit(2)

TOLERANCE = 1e-3  # float32 rounding between these paths is ~1e-6 here
SIZES = dict(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64)
MODELS = {
    "led": (LEDForConditionalGeneration, LEDConfig(**SIZES, max_encoder_position_embeddings=64,
                                                    max_decoder_position_embeddings=64, attention_window=[4])),
    # every layer sparse (an MoE layer routes each token to its top experts)
    "nllb-moe": (NllbMoeForConditionalGeneration, NllbMoeConfig(**SIZES, max_position_embeddings=64, num_experts=2,
                                                                encoder_sparse_step=1, decoder_sparse_step=1,
                                                                expert_capacity=64)),
}
ENCODER = torch.tensor([[5, 6, 7]])
STATIC_LENGTH = 8  # the decoder's static self-attention cache: longer than what is fed, as generate() sizes it


def worst_step_differences(cls, config):
    torch.manual_seed(0)
    model = cls(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # weights large enough that a wrong step moves the logits visibly
            parameter.normal_(0.0, 0.2)
    # transformers 5.24 renamed the forward's ``past_key_values`` to ``cache``
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    decoder = torch.tensor([[config.decoder_start_token_id, 9, 10]])
    found = {}
    with torch.no_grad():
        uncached = model(input_ids=ENCODER, decoder_input_ids=decoder, use_cache=False).logits
        encoded = model.get_encoder()(input_ids=ENCODER)
        for kind in ("dynamic", "static"):
            if kind == "static":
                cache = EncoderDecoderCache(StaticCache(config=config, max_cache_len=STATIC_LENGTH),
                                            StaticCache(config=config, max_cache_len=ENCODER.shape[1]))
            else:
                cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
            steps = [model(encoder_outputs=encoded, decoder_input_ids=decoder[:, i:i + 1], use_cache=True,
                           **{keyword: cache}).logits for i in range(decoder.shape[1])]
            found[kind] = float((torch.cat(steps, dim=1) - uncached).abs().max())
    return found


reproduced = False
print(f"transformers {transformers.__version__}: a 3-token decoder prompt fed one token at a time vs one uncached "
      "forward, max |logit difference|")
for name, (cls, config) in MODELS.items():
    found = worst_step_differences(cls, config)
    if found["dynamic"] > TOLERANCE:
        print(f"cannot run: {name}'s dynamic cache already disagrees ({found['dynamic']:.3g})", file=sys.stderr)
        sys.exit(2)
    broken = found["static"] > TOLERANCE
    reproduced |= broken
    print(f"{name}: DynamicCache {found['dynamic']:.3g}, StaticCache {found['static']:.3g}",
          "REPRODUCED" if broken else "agrees")
print("REPRODUCED" if reproduced else "not reproduced")
raise SystemExit(1 if reproduced else 0)
