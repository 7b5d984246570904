"""transformers 5.x: an explicit ``generate(cache_implementation="hybrid")`` runs on a DynamicCache, without a word.

``GenerationMixin._prepare_generation_config`` merges the user's arguments into the generation config
(``model_kwargs = generation_config.update(**kwargs)``) and then unsets ``cache_implementation`` whenever it is
"hybrid", under a comment saying the branch only sees the Hub's default values ("Related to #40039"). It also sees
a value the caller passed: generate() then builds the default DynamicCache, logs nothing, and returns it. "hybrid"
is still listed in ``ALL_CACHE_IMPLEMENTATIONS`` and ``ALL_STATIC_CACHE_IMPLEMENTATIONS`` (as a deprecated alias of
"static"), and 4.57 builds the StaticCache asked for (PR #40135: "Any user-defined `cache_implementation="hybrid"`
will apply the static sliding window hybrid cache"). The tokens are the same: what runs is another cache, not a
wrong computation.

Standalone (torch + transformers, no download): a tiny random Llama and a tiny random Gemma-2 (sliding-window
layers, what "hybrid" was made for), greedy, two new tokens. Exits 1 where an explicit "hybrid" ran on a
DynamicCache, 0 where it ran on a static (preallocated) cache, 2 where it cannot run here (the release lists no
"hybrid", or refuses it for both models).
"""
import logging
import sys
import warnings

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache, Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM
    from transformers.generation import configuration_utils
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

if "hybrid" not in configuration_utils.ALL_CACHE_IMPLEMENTATIONS:
    print(f"cannot run: transformers {transformers.__version__} lists no cache_implementation 'hybrid'",
          file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
static_names = vars(configuration_utils).get("ALL_STATIC_CACHE_IMPLEMENTATIONS")  # 4.56 and later
print(f"'hybrid' in ALL_CACHE_IMPLEMENTATIONS: True; in ALL_STATIC_CACHE_IMPLEMENTATIONS: "
      f"{'hybrid' in static_names if static_names else 'no such list in this release'}")
# The preallocated caches generate() builds for a static name: StaticCache (4.56 and later, any layer kinds), and
# 4.46's per-architecture classes.
STATIC = ("StaticCache", "OffloadedStaticCache", "HybridCache", "SlidingWindowCache", "HybridChunkedCache")

logged = []


class Collect(logging.Handler):
    def emit(self, record):
        logged.append(record.getMessage())


transformers.utils.logging.set_verbosity_warning()
transformers.utils.logging.get_logger("transformers").addHandler(Collect())
small = dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
models = {"llama": (LlamaForCausalLM, LlamaConfig(**small)),
          "gemma2 (window 8)": (Gemma2ForCausalLM, Gemma2Config(**small, head_dim=8, sliding_window=8))}
ids = torch.tensor([[1, 5, 9, 3]])


def describe(cache):
    layers = getattr(cache, "layers", None)  # 4.56 and later: the cache's layers, each of its own kind
    return type(cache).__name__ + (f" [{', '.join(type(layer).__name__ for layer in layers)}]" if layers else "")


def generate(model, implementation):
    """(the cache generate() returned, the tokens, what it logged or warned)."""
    logged.clear()
    once = getattr(transformers.utils.logging, "warning_once", None)  # a deprecation is logged once per process
    if hasattr(once, "cache_clear"):
        once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                             pad_token_id=0, return_dict_in_generate=True, cache_implementation=implementation)
    return out.get("cache", out.get("past_key_values")), out.sequences[0, ids.shape[1]:].tolist(), \
        logged + [str(warning.message) for warning in caught]


ignored, honoured, silent = [], [], True
for name, (model_class, config) in models.items():
    torch.manual_seed(0)
    model = model_class(config).eval()
    try:
        cache, tokens, said = generate(model, "hybrid")
    except ValueError as exc:  # 4.46 refuses "hybrid" for a model without a sliding window, in words
        print(f"{name}: cache_implementation='hybrid' refused: {exc}")
        continue
    about = [message for message in said if "hybrid" in message or "cache_implementation" in message]
    other = f" ({len(said) - len(about)} other message(s))" if len(said) > len(about) else ""
    print(f"{name}: cache_implementation='hybrid' ran on {describe(cache)}, tokens {tokens}; logged or warned "
          f"about it: {about or 'nothing'}{other}")
    try:  # for comparison only: what "static" builds (4.46's Gemma-2 has its own static-cache bug, another finding)
        static, static_tokens, _ = generate(model, "static")
        print(f"{name}: cache_implementation='static' ran on {describe(static)}, tokens {static_tokens}")
    except RuntimeError as exc:  # 4.46.3's Gemma-2 mask is as long as the tokens so far, its keys as the cache
        print(f"{name}: cache_implementation='static' raised RuntimeError: {exc} (not what this script checks)")
    if isinstance(cache, DynamicCache):
        ignored.append(name)
        silent = silent and not about
    elif type(cache).__name__ in STATIC:
        honoured.append(name)
    else:
        print(f"cannot run: generate() returned {type(cache).__name__} for {name}: neither a DynamicCache nor a "
              "static cache", file=sys.stderr)
        sys.exit(2)
if not ignored and not honoured:
    print(f"cannot run: transformers {transformers.__version__} refuses 'hybrid' for both models", file=sys.stderr)
    sys.exit(2)
if ignored:
    print(f"an explicit cache_implementation='hybrid' ran on a DynamicCache for {', '.join(ignored)}"
          f"{', without a word' if silent else ''}: REPRODUCED")
else:
    print(f"an explicit cache_implementation='hybrid' built a static cache for {', '.join(honoured)}: not reproduced")
sys.exit(1 if ignored else 0)
