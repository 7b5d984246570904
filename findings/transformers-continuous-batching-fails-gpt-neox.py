"""transformers 5.24: continuous batching fails every request of GPT-NeoX (its attention calls the paged cache's
update() without the kwargs argument it requires).

transformers documents that ``generate_batch()`` works with all autoregressive text models. GPT-NeoX's attention
calls ``cache.update(key_states, value_states, self.layer_idx)``; ``PagedAttentionCache.update`` takes a fourth,
required ``kwargs`` argument. Every request ends FAILED with TypeError and no tokens. Llama in the same script
generates normally. Exits 1 when the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import GenerationConfig, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
# The error each request of the failing models ends with while the bug is present (any other: exit 2).
BUG = "PagedAttentionCache.update() missing 1 required positional argument: 'kwargs'"
MODELS = {
    "gpt_neox": lambda: GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, intermediate_size=128)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                                                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)),
}
failed = {}
for name, build in MODELS.items():
    torch.manual_seed(0)
    model = build().eval()
    generation = GenerationConfig(max_new_tokens=2, do_sample=False, eos_token_id=-1, pad_token_id=0)
    paged = ContinuousBatchingConfig(page_size=16, num_blocks=16, use_cuda_graph=False)
    results = model.generate_batch([[5, 6, 7], [8, 9]], generation_config=generation, continuous_batching_config=paged,
                                   warmup=False)
    outputs = [results[f"req_{i}"] for i in range(2)]
    failed[name] = all(o.error for o in outputs)
    for i, out in enumerate(outputs):
        print(f"{name}, request {i}: status {out.status}, tokens {out.generated_tokens}, error {out.error!r}")
        if out.error and BUG not in out.error:
            raise RuntimeError(f"{name}: a request failed otherwise than with this bug: {out.error}")  # exit 2
broken = failed["gpt_neox"] and not failed["llama"]
print("REPRODUCED" if broken else "not reproduced")
sys.exit(1 if broken else 0)
