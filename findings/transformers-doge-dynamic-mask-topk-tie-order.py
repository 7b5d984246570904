"""transformers: Doge's dynamic mask keeps the top keep_window_size keys by torch.topk, whose choice among tied
keys is unspecified, and a repeated token ties with itself, so cached decoding keeps different keys than one
uncached pass.

``DogeAttention.prepare_dynamic_mask`` scores every key by ``dt_states = exp(A * softplus(dt_proj(value)))`` and,
once there are more than ``keep_window_size`` keys, keeps ``torch.topk(attn_mask, keep_window_size, ...)``.
Values carry no position (RoPE is applied to queries and keys only), so in the first layer every occurrence of a
token has a bit-identical score: a repeated token makes a tie. When the tie straddles the window boundary,
torch.topk picks which occurrences stay. Its docs say the indices of tied elements "are not guaranteed to be
stable and may vary across different invocations", and on CPU the pick depends on the row's length and the
batch. A decode step (T keys), the uncached pass (T + n keys, n of them causally masked), a static cache
(max_cache_len keys) and a batch therefore drop different occurrences. The dropped keys have different RoPE
positions, so the logits differ. The script feeds a 16-token sequence drawn from 5 token ids (repeats are
certain) through a tiny Doge with keep_window_size 8. It compares one uncached pass with a cached prefill of 8
followed by 8 tokens fed one at a time, in float32 and float64. As a control it repeats both with a
rounding-tolerant tie-break: scores equal to 2**-20 of the row's largest count as tied, and tied keys are taken
in index order. A plain stable sort is not enough in float64, where one token's value vector computed alone (a
decode step) and inside a 16-row matmul can differ by one ulp. It also runs 16 distinct tokens the same way.
Exits 1 while the bug is present.
"""
import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.24')", file=sys.stderr)
    sys.exit(2)
if tuple(map(int, transformers.__version__.split(".")[:2])) < (5, 24):
    print(f"cannot run: transformers {transformers.__version__} predates the cache= keyword (5.24)", file=sys.stderr)
    sys.exit(2)

torch.set_num_threads(1)
transformers.logging.set_verbosity_error()

# tiny twin of DogeConfig's defaults (fuzzkv's generic shrinker): keep_window_size 2048 -> 8
OVERRIDES = {"vocab_size": 512, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "max_position_embeddings": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
             "keep_window_size": 8, "num_experts": 4, "num_experts_per_tok": 2}
PREFILL, TOTAL = 8, 16

_topk = torch.topk
STABLE = False


def window_topk(input, k, dim=-1, largest=True, sorted=True):
    """torch.topk, unchanged except in the control run, where Doge's window breaks ties by key index."""
    if STABLE and sys._getframe(1).f_code.co_name == "prepare_dynamic_mask":
        # Scores equal up to rounding (2**-20 relative to the largest; dt_states lie in (0, 1] when A < 0 and a few
        # units otherwise) count as tied, and tied keys are taken in index order.
        key = torch.round(input / input.amax(dim, keepdim=True).clamp(min=1e-30) * 2.0**20)
        order = torch.sort(key, dim=dim, descending=largest, stable=True)
        return torch.return_types.topk((order.values.narrow(dim, 0, k), order.indices.narrow(dim, 0, k)))
    return _topk(input, k, dim=dim, largest=largest, sorted=sorted)


torch.topk = window_topk

config = AutoConfig.for_model("doge", **OVERRIDES)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()
with torch.no_grad():
    for module in model.modules():  # fuzzkv's sensitive init: transformers' std 0.02 makes logits nearly equal
        if isinstance(module, (torch.nn.Linear, torch.nn.Embedding)):
            module.weight.normal_(0.0, 0.2 * (64 / module.weight.shape[1]) ** 0.5)
    for layer in model.model.layers:  # A is zero at init (every key would tie); a trained model has A != 0
        layer.self_attn.A.normal_(0.0, 0.1)

generator = torch.Generator().manual_seed(0)
SEQUENCES = {"16 tokens from 5 ids": torch.randint(2, 7, (1, TOTAL), generator=generator),
             "16 distinct tokens": (torch.randperm(500, generator=generator)[:TOTAL] + 2)[None]}


def per_position_diff(ids):
    with torch.no_grad():
        one_pass = model(input_ids=ids, use_cache=False).logits
        cache = DynamicCache(config=config)
        steps = [model(input_ids=ids[:, :PREFILL], cache=cache, use_cache=True).logits]
        for position in range(PREFILL, ids.shape[1]):
            steps.append(model(input_ids=ids[:, position:position + 1], cache=cache, use_cache=True).logits)
    cached = torch.cat(steps, dim=1)
    return (cached.double() - one_pass.double()).abs().amax(-1)[0, PREFILL - 1:], float(one_pass.abs().max())


print(f"torch {torch.__version__}, transformers {transformers.__version__}")
worst = {}
for name, ids in SEQUENCES.items():
    print(f"{name}: {ids[0].tolist()}")
    for dtype in (torch.float32, torch.float64):
        model = model.to(dtype)
        for STABLE in (False, True):
            diff, scale = per_position_diff(ids)
            label = "rounding-tolerant index-ordered tie-break (control)" if STABLE else "library (torch.topk)"
            print(f"  {str(dtype)[6:]} {label}: max |logit diff| per position, cached (prefill {PREFILL}, then 1 at "
                  f"a time) vs one pass: {[f'{d:.1e}' for d in diff.tolist()]}; logit scale {scale:.3g}")
            worst[name, STABLE] = max(worst.get((name, STABLE), 0.0), float(diff.max()))
    model = model.to(torch.float32)
reproduced = (worst["16 tokens from 5 ids", False] > 1e-2 and worst["16 tokens from 5 ids", True] < 1e-4
              and worst["16 distinct tokens", False] < 1e-4)
print("worst:", {f"{n}, {'control' if s else 'library'}": f"{v:.3g}" for (n, s), v in worst.items()})
print("REPRODUCED" if reproduced else "not reproduced")
sys.exit(1 if reproduced else 0)
