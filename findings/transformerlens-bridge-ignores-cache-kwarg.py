"""TransformerLens 4.3.0 TransformerBridge: the KV cache is never extended on transformers 5.24.

transformers 5.24 renamed `past_key_values` to `cache`; decoder layers now call their
attention module with `cache=...`. The bridge's attention (`_update_kv_cache`) only looks
for `past_key_values` / `layer_past`, so the cache update is skipped at every layer.

Needs only torch, transformers and transformer-lens. Random weights, no downloads.
Run:  HF_HUB_OFFLINE=1 python transformerlens-bridge-ignores-cache-kwarg.py
"""
import copy
import os
import sys
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformer_lens.model_bridge.sources import build_bridge_from_module
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM
except ImportError as error:
    print(f"cannot run: {error} (pip install torch transformers 'transformer-lens>=4.3')", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()  # silence the `past_key_values` deprecation notice


def tiny(cls, config):
    torch.manual_seed(0)
    config._attn_implementation = "eager"
    model = cls(config).eval()
    with torch.no_grad():  # redraw weights so the logits are not flat
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                module.weight.normal_(0.0, 0.2)
    return model


MODELS = {
    "LlamaForCausalLM": lambda: tiny(LlamaForCausalLM, LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "Gemma2ForCausalLM": lambda: tiny(Gemma2ForCausalLM, Gemma2Config(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
        sliding_window=8, query_pre_attn_scalar=16)),
}

print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
      f"transformer-lens {version('transformer-lens')}")
ok = True
for arch, make in MODELS.items():
    hf = make()
    bridge = build_bridge_from_module(copy.deepcopy(hf), arch, hf_config=hf.config).eval()
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(1))
    n = 5

    with torch.no_grad():
        # 1. bridge.generate with and without the KV cache (greedy, logits of every step)
        gen = {flag: bridge.generate(ids, max_new_tokens=n, do_sample=False, stop_at_eos=False,
                                     use_past_kv_cache=flag, output_logits=True, verbose=False)
               for flag in (False, True)}
        logits = {flag: torch.stack(list(out.logits), dim=1) if isinstance(out.logits, (tuple, list))
                  else out.logits for flag, out in gen.items()}
        diff = (logits[True] - logits[False]).abs().amax(dim=(0, 2))  # per generated step
        scale = logits[False].abs().max().item()
        tokens_differ = not torch.equal(gen[True].sequences, gen[False].sequences)

        # 2. manual cached forward, as documented: prefill, then one token with the cache
        prefill_logits, cache = bridge(ids, return_type="logits_and_cache", use_cache=True)
        after_prefill = cache.get_seq_length()
        nxt = prefill_logits[:, -1:].argmax(-1)
        step_logits, cache2 = bridge(nxt, return_type="logits_and_cache", past_key_values=cache)
        after_step = cache2.get_seq_length()
        full = bridge(torch.cat([ids, nxt], dim=1), return_type="logits", use_cache=False)
        step_diff = (step_logits[:, -1] - full[:, -1]).abs().max().item()

        # 3. the HF model itself on the same cache protocol, for reference
        hf_out = hf(ids, use_cache=True)
        hf_len = hf_out.past_key_values.get_seq_length()

    print(f"\n== {arch} (prompt {ids.shape[1]} tokens, {n} new) ==")
    print("generate: max|logits(cached) - logits(uncached)| per step: "
          + ", ".join(f"{d:.3g}" for d in diff.tolist()))
    print(f"generate: first cached step diff {diff[1].item():.4g}, logit scale max|logit| {scale:.4g}")
    print(f"generate: greedy tokens differ: {tokens_differ}")
    print(f"  uncached: {gen[False].sequences[0, ids.shape[1]:].tolist()}")
    print(f"  cached:   {gen[True].sequences[0, ids.shape[1]:].tolist()}")
    print(f"bridge forward: cache length after prefill {after_prefill} (expected {ids.shape[1]}), "
          f"after one cached token {after_step} (expected {ids.shape[1] + 1}); same object: {cache2 is cache}")
    print(f"bridge forward: max|cached step logits - full recompute| {step_diff:.4g}")
    print(f"HF model alone: cache length after prefill {hf_len}")
    bug = after_prefill != ids.shape[1] or diff.max().item() > 1e-4
    ok &= not bug
    print("RESULT:", "BUG (cache not extended)" if bug else "ok")

print("not reproduced" if ok else "REPRODUCED")
raise SystemExit(0 if ok else 1)
