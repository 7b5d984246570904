"""transformers: DeepSeek-V4's compressors (CSA/HCA, and the CSA indexer's own) pool left-padding tokens.

``DeepseekV4Attention.forward`` hands its compressor ``hidden_states`` and ``position_ids`` but never the
attention mask. The compressor cuts the row into windows of ``compress_rate`` *slots* starting at slot 0 and
softmax-pools every slot of a window, padding included, while the query side's causality uses the mask-derived
``position_ids``. So with left padding the compressed KV entries a real token attends to hold the pad tokens'
projections and cover different real tokens than in the unpadded row: a padded row's real-token logits differ
from the same row unpadded, and they change with the *identity of the pad token*, in float32 and float64 alike,
with or without a cache. The sliding-window attention itself masks the padding correctly (the first
``compress_rate - 1`` real positions, which see no compressed entry yet, agree to rounding).

Tiny config (3 layers: HCA, CSA, HCA; compress rates 4 and 128; index_topk 8), seeded random weights drawn with
std 0.2*sqrt(64/fan_in) (transformers' own init, std 0.02, makes logits nearly flat; the effect is there too, only
smaller). Prints per real position the largest |logit difference| against the unpadded row. Exits 1 while the
bug is present.
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
print(f"torch {torch.__version__}, transformers {transformers.__version__}")

config = AutoConfig.for_model(
    "deepseek_v4", vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
    head_dim=16, qk_rope_head_dim=2, partial_rotary_factor=0.125, q_lora_rank=32, o_lora_rank=16, o_groups=2,
    index_n_heads=4, index_head_dim=16, index_topk=8, sliding_window=8, moe_intermediate_size=32,
    n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, hc_mult=4, max_position_embeddings=128,
    layer_types=["heavily_compressed_attention", "compressed_sparse_attention", "heavily_compressed_attention"],
    mlp_layer_types=["hash_moe", "moe", "moe"],
    compress_rates={"compressed_sparse_attention": 4, "heavily_compressed_attention": 128},
    rope_parameters={"main": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.125},
                     "compress": {"rope_type": "default", "rope_theta": 160000.0, "partial_rotary_factor": 0.125}},
)
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32).eval()
with torch.no_grad():  # seeded random weights at a trained model's logit scale
    for p in model.parameters():
        if p.dim() >= 2:
            p.normal_(0.0, 0.2 * (64 / p.shape[-1]) ** 0.5)
        else:
            p.copy_(torch.where(p == 0, torch.randn_like(p) * 0.1, p * (1 + torch.randn_like(p) * 0.1)))

real = torch.randint(2, 512, (1, 8), generator=torch.Generator().manual_seed(1))
N_PAD = 2


def padded(pad_id):
    ids = torch.cat([torch.full((1, N_PAD), pad_id), real], 1)
    mask = torch.cat([torch.zeros(1, N_PAD, dtype=torch.long), torch.ones_like(real)], 1)
    return ids, mask


def positions(mask):
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def uncached(m, ids, mask):
    return m(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False).logits


@torch.no_grad()
def cached(m, ids, mask, prefill):
    """Prefill the first `prefill` slots through a DynamicCache, then one token at a time (as generate() does)."""
    cache, pos, out = DynamicCache(config=m.config), positions(mask), []
    for start, end in [(0, prefill)] + [(t, t + 1) for t in range(prefill, ids.shape[1])]:
        out.append(m(input_ids=ids[:, start:end], attention_mask=mask[:, :end], position_ids=pos[:, start:end],
                     cache=cache, use_cache=True).logits)
    return torch.cat(out, 1)


def row(label, a, b):
    d = (a.double() - b.double()).abs().amax(-1)[0]
    print(f"  {label}: {[f'{x:.2g}' for x in d.tolist()]}")
    return float(d.max())


worst = 0.0
for dtype in (torch.float32, torch.float64):
    m = model.to(dtype)
    if dtype == torch.float64:
        m.set_experts_implementation("eager")  # the grouped-mm experts take no float64
    alone = uncached(m, real, torch.ones_like(real))
    scale = float(alone.abs().max())
    print(f"{str(dtype)[6:]} (logit scale {scale:.3g}), max |logit diff| per real position 0..7, "
          f"{N_PAD} left pads vs the unpadded row:")
    for pad_id in (1, 7):
        ids, mask = padded(pad_id)
        worst = max(worst, row(f"uncached, pad id {pad_id}", uncached(m, ids, mask)[:, N_PAD:], alone))
    ids1, mask1 = padded(1)
    ids7, _ = padded(7)
    row("uncached, pad id 1 vs pad id 7 (same mask)", uncached(m, ids1, mask1)[:, N_PAD:],
        uncached(m, ids7, mask1)[:, N_PAD:])
    row("cached (prefill 5 slots, then 1 by 1), pad id 1", cached(m, ids1, mask1, 5)[:, N_PAD:],
        cached(m, real, torch.ones_like(real), 5 - N_PAD))
    row("control: cached vs uncached, unpadded", cached(m, real, torch.ones_like(real), 3), alone)

if worst > 1e-3:
    print(f"REPRODUCED: left padding changes real-token logits by up to {worst:.3g} (float64 too)")
    sys.exit(1)
print("not reproduced")
