"""transformers 5.24: continuous batching fails every request of MPT (the paged cache's mask is None).

transformers documents that ``generate_batch()`` works with all autoregressive text models. Under continuous batching
``create_causal_mask`` returns None (the paged attention builds its own masks), and MPT's forward calls
``.to(torch.bool)`` on what it returns. Nothing refuses the model up front: every request ends FAILED with
AttributeError and no tokens. Llama in the same script generates normally. Exits 1 when the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, MptConfig, MptForCausalLM
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")
# The error each request of the failing models ends with while the bug is present (any other: exit 2).
BUG = "'NoneType' object has no attribute 'to'"
MODELS = {
    "mpt": lambda: MptForCausalLM(MptConfig(vocab_size=128, d_model=64, n_layers=2, n_heads=4)),
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
broken = failed["mpt"] and not failed["llama"]
print("REPRODUCED" if broken else "not reproduced")
sys.exit(1 if broken else 0)
