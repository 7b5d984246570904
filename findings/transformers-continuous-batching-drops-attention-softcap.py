"""transformers: continuous batching silently drops attention-logit softcapping (Gemma-2).

``generate_batch`` switches an ``eager`` model to ``paged|eager`` (continuous_api.py: "If the implementation is
still eager, switch to paged|eager"), and ``eager_paged_attention_forward`` (integrations/eager_paged.py)
takes ``softcap`` only through ``**kwargs`` and never applies it, where Gemma-2's own eager attention computes
``tanh(scores / softcap) * softcap`` (modeling_gemma2.py). Every token's log-prob from continuous batching
differs from the model's own forward; with softcapping removed from the model the two agree to float32
rounding. Nothing warns or refuses. Exits 1 when the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import Gemma2Config, Gemma2ForCausalLM, GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
print(f"torch {torch.__version__}, transformers {transformers.__version__}")


def build(softcap):
    config = Gemma2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=64,
                          attn_logit_softcapping=softcap, final_logit_softcapping=30.0, query_pre_attn_scalar=16,
                          max_position_embeddings=256, attn_implementation="eager")
    torch.manual_seed(0)
    model = Gemma2ForCausalLM(config).eval()
    with torch.no_grad():  # fuzzkv's sensitive init (transformers' std 0.02 keeps every logit near 0)
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.2 * (64 / module.weight.shape[1]) ** 0.5)
        for layer in model.model.layers:  # attention scores of a trained model's order (tens), where a cap of 50 acts
            layer.self_attn.q_proj.weight.mul_(4.0)
            layer.self_attn.k_proj.weight.mul_(4.0)
    return model.to(torch.float64)


def compare(model, label):
    prompts = [[5, 17, 42, 7, 99, 3], [11, 12]]
    generation = GenerationConfig(max_new_tokens=4, do_sample=False, eos_token_id=-1, pad_token_id=0)
    paged = ContinuousBatchingConfig(page_size=16, num_blocks=16, return_logprobs=True, use_cuda_graph=False)
    results = model.generate_batch(prompts, generation_config=generation, continuous_batching_config=paged,
                                   warmup=False)
    worst = 0.0
    for i, prompt in enumerate(prompts):
        out = results[f"req_{i}"]
        sequence = torch.tensor([prompt + out.generated_tokens])
        with torch.no_grad():
            logprobs = model(sequence).logits.double().log_softmax(-1)[0]
        uncached = [logprobs[len(prompt) - 1 + j, t].item() for j, t in enumerate(out.generated_tokens)]
        worst = max(worst, max(abs(a - b) for a, b in zip(out.logprobs, uncached)))
        print(f"{label}, request {i}: tokens {out.generated_tokens}, continuous batching log-probs "
              f"{[round(x, 5) for x in out.logprobs]}, the model's own forward {[round(x, 5) for x in uncached]}")
    print(f"{label}: largest log-prob difference {worst:.3g}")
    return worst


with_softcap = compare(build(50.0), "attn_logit_softcapping=50 (Gemma-2's default)")
without = compare(build(None), "attn_logit_softcapping=None")
print("REPRODUCED" if with_softcap > 100 * max(without, 1e-6) else "not reproduced")
sys.exit(1 if with_softcap > 100 * max(without, 1e-6) else 0)
