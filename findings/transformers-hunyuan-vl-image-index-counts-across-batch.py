"""transformers' HunYuan-VL numbers its images across the whole batch, not within each prompt: get_rope_index's
image-index axis (documented as "the ordinal of the image/frame in the input sequence") keeps counting from one row
to the next, so a prompt's image gets index 1 when an earlier row holds one image. The same prompt gives different
logits in a batch than alone, two identical rows give different logits, and so do the beams of beam search.

Builds a tiny HunYuan-VL (seeded random weights), lays one prompt out with one image (its 8 image tokens: 2 x 2
merged patches and the tokens its projector adds), runs it alone and as both rows of a batch of two identical rows,
and compares every position's logits. Needs torch and transformers; no download. Exit 1: reproduced; 0: the
rows agree (the fix); 2: cannot run here.
"""

import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import HunYuanVLConfig, HunYuanVLForConditionalGeneration
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5.23')", file=sys.stderr)
    sys.exit(2)

TOLERANCE = 1e-3  # float32 rounding between these paths is ~4e-6 here
IMAGE, PER_IMAGE = 511, 8
PATCH = 3 * 1 * 16 * 16  # channels x frames per patch x patch area
CONFIG = HunYuanVLConfig(
    text_config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
                     rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[2, 3, 3])),
    vision_config=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
                       num_hidden_layers=2, out_hidden_size=64, text_hidden_size=64, patch_size=16,
                       spatial_merge_size=2, temporal_patch_size=1, num_channels=3),
    image_token_id=IMAGE)

torch.manual_seed(0)
model = HunYuanVLForConditionalGeneration(CONFIG).eval()
with torch.no_grad():
    for parameter in model.parameters():  # weights large enough that a moved position shows in the logits (at 0.2: 1.7e-4)
        parameter.normal_(0.0, 0.5)
ids = torch.tensor([[3, *[IMAGE] * PER_IMAGE, 4, 5]])
patches = torch.randn(16, PATCH, generator=torch.Generator().manual_seed(1))  # one image of 4 x 4 patches


def last_logits(rows):
    """The logits of ``rows`` copies of the prompt, each with its own copy of the image."""
    batch = ids.repeat(rows, 1)
    with torch.no_grad():
        return model(input_ids=batch, attention_mask=torch.ones_like(batch), pixel_values=patches.repeat(rows, 1),
                     image_grid_thw=torch.tensor([[1, 4, 4]] * rows), mm_token_type_ids=(batch == IMAGE).long(),
                     use_cache=False).logits


alone, pair = last_logits(1), last_logits(2)
first, second = float((pair[0] - alone[0]).abs().max()), float((pair[1] - alone[0]).abs().max())
print(f"transformers {transformers.__version__}: one prompt with one image, every position's logits vs the prompt alone, "
      f"max |difference|: first row of a batch of two identical rows {first:.3g}, second row {second:.3g} "
      f"(tolerance {TOLERANCE})")
if first > TOLERANCE:
    print("cannot run: the first row already disagrees, so this is not the bug this script isolates", file=sys.stderr)
    sys.exit(2)
print("REPRODUCED" if second > TOLERANCE else "not reproduced")
raise SystemExit(1 if second > TOLERANCE else 0)
