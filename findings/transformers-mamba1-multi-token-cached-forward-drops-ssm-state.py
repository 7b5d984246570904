"""transformers: Mamba (v1) and FalconMamba ignore the cached SSM state in a multi-token forward.

Feeding a prompt in two chunks through the cache (chunked prefill, or verifying several draft tokens
in speculative decoding) must give the logits of one pass. For the second chunk, MambaMixer takes its
"full sequence" branch, which updates the conv state from the cache but starts the selective scan from
a zero state: the first chunk's recurrent state is dropped. Exits 1 when the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import DynamicCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

print(f"torch {torch.__version__}, transformers {transformers.__version__}")
worst = 0.0
for config_class, model_class in ((transformers.MambaConfig, transformers.MambaForCausalLM),
                                  (transformers.FalconMambaConfig, transformers.FalconMambaForCausalLM)):
    config = config_class(vocab_size=512, hidden_size=64, state_size=8, num_hidden_layers=2, conv_kernel=4,
                          expand=2, time_step_rank=8)
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():  # fuzzkv's sensitive init: transformers' std 0.02 makes every logit nearly equal
        for module in model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
                fan_in = module.weight.shape[1]
                module.weight.normal_(0.0, 0.2 * (64 / fan_in) ** 0.5)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        one_pass = model(input_ids=ids, use_cache=False).logits
        cache = DynamicCache(config=config)
        first = model(input_ids=ids[:, :2], cache=cache, use_cache=True).logits
        second = model(input_ids=ids[:, 2:], cache=cache, use_cache=True).logits
        stepped_cache = DynamicCache(config=config)
        model(input_ids=ids[:, :2], cache=stepped_cache, use_cache=True)
        step3 = model(input_ids=ids[:, 2:3], cache=stepped_cache, use_cache=True).logits
        step4 = model(input_ids=ids[:, 3:4], cache=stepped_cache, use_cache=True).logits
    chunked = torch.cat([first, second], dim=1)
    stepped = torch.cat([first, step3, step4], dim=1)
    diff = (chunked - one_pass).abs().amax(-1)[0]
    step_diff = (stepped - one_pass).abs().amax(-1)[0]
    print(f"{model_class.__name__}: max |logit diff| per position, chunks [2, 2] vs one pass: "
          f"{[f'{d:.2e}' for d in diff.tolist()]}; one token at a time: {[f'{d:.2e}' for d in step_diff.tolist()]}; "
          f"logit scale {float(one_pass.abs().max()):.3g}")
    worst = max(worst, float(diff.max()))
print("REPRODUCED" if worst > 1e-4 else "not reproduced")
sys.exit(1 if worst > 1e-4 else 0)
