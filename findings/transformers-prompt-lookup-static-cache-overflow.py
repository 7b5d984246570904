"""transformers: prompt-lookup decoding overflows a static cache by drafting past ``max_length``.

``PromptLookupCandidateGenerator.get_candidates`` caps its candidates with
``end_idx = min(end_idx, input_length, self.max_length)``, but ``end_idx`` is an index into the tokens it
copies from (where the matched n-gram's continuation ends), not the length of the sequence the candidates
extend. The number of candidates is therefore never limited to ``max_length - 1 - input_length``, as the
draft-model generator limits its own (``main_model_max_length - input_ids.shape[1] - 1``). With
``cache_implementation="static"`` generate() sizes the cache to ``max_length - 1``, so verifying the overlong
candidate window writes past the last slot: IndexError. The same case with a draft model, or with a dynamic
cache, runs. Exits 1 when the bug is present.
"""
import copy
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} refuses assisted generation with a static cache (5.24 "
          "takes it)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, max_position_embeddings=256)
torch.manual_seed(0)
model = LlamaForCausalLM(config).eval()
ids = torch.tensor([[0, 0, 0, 0]])  # a repeated token: the last n-gram matches earlier, so prompt lookup drafts
draft = copy.deepcopy(model)
draft.generation_config.num_assistant_tokens = 2
draft.generation_config.assistant_confidence_threshold = 0.0
draft.generation_config.num_assistant_tokens_schedule = "constant"


def run(cache, **assistance):
    try:
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, min_new_tokens=2,
                       do_sample=False, pad_token_id=0, cache_implementation=cache, **assistance)
        return "ok"
    except IndexError as exc:  # the finding: writing past the static cache's last slot
        if cache != "static" or "prompt_lookup_num_tokens" not in assistance:
            raise  # the other cases must run: an error there is not this bug
        return f"{type(exc).__name__}: {exc}"


results = {}
for cache in ("dynamic", "static"):
    for name, assistance in (("prompt lookup (2 tokens)", {"prompt_lookup_num_tokens": 2}),
                             ("draft model (2 tokens)", {"assistant_model": draft})):
        results[(cache, name)] = run(cache, **assistance)
        print(f"prompt 4 tokens, 2 new, {cache} cache, {name}: {results[(cache, name)]}")
broken = results[("static", "prompt lookup (2 tokens)")] != "ok"
print("REPRODUCED" if broken else "not reproduced")
sys.exit(1 if broken else 0)
