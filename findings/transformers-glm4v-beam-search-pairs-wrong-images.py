"""transformers' GLM-4V family expands a prompt's image features for beam search image by image ([A, A, B, B])
where each beam needs the prompt's whole group ([A, B, A, B]): with two images in one prompt, every beam but none
of the single-image ones sees its images swapped or doubled, and its first-step scores are not the prompt's.

Builds a tiny GLM-4V (seeded random weights), lays one prompt out as its processor does (two images, each
<|begin_of_image|> + 4 image tokens + <|end_of_image|>), and compares the scores generate() gives the first new
token with num_beams=2 against one uncached forward over the prompt. One image per prompt agrees (the control).
Needs torch and transformers; no download. Exit 1: reproduced; 0: the paths agree (the fix); 2: cannot run here.
"""

import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import Glm4vConfig, Glm4vForConditionalGeneration
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=5')", file=sys.stderr)
    sys.exit(2)
if int(transformers.__version__.split(".")[0]) < 5:
    print(f"cannot run: transformers {transformers.__version__}: this script feeds the token-type map "
          "(mm_token_type_ids) transformers 5 places M-RoPE positions by", file=sys.stderr)
    sys.exit(2)

TOLERANCE = 1e-3  # float32 rounding between these paths is ~1e-5 here
IMAGE, BEGIN, END = 507, 511, 510
CONFIG = Glm4vConfig(
    text_config=dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, rope_parameters=dict(rope_type="default", rope_theta=10000.0,
                                                                 mrope_section=[2, 3, 3])),
    vision_config=dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64, patch_size=14,
                       spatial_merge_size=2, temporal_patch_size=2, image_size=56, in_channels=3),
    image_token_id=IMAGE, video_token_id=506, image_start_token_id=BEGIN, image_end_token_id=END,
    video_start_token_id=509, video_end_token_id=508)
GRID = [1, 4, 4]  # one frame of 4 x 4 patches: 4 image tokens after the 2 x 2 merge
PATCH = 3 * 2 * 14 * 14  # channels x frames per patch x patch area

torch.manual_seed(0)
model = Glm4vForConditionalGeneration(CONFIG).eval()
with torch.no_grad():
    for parameter in model.parameters():  # weights large enough that a swapped image moves the logits visibly
        parameter.normal_(0.0, 0.2)


def prompt_with(images):
    """Text, then each image as the processor lays it out; its pixel values and grids."""
    ids = [3]
    for _ in range(images):
        ids += [BEGIN, *[IMAGE] * 4, END, 4]
    pixels = torch.cat([torch.randn(16, PATCH, generator=torch.Generator().manual_seed(i)) for i in range(images)])
    ids = torch.tensor([ids])
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                image_grid_thw=torch.tensor([GRID] * images), mm_token_type_ids=(ids == IMAGE).long())


def worst_first_step_difference(images):
    inputs = prompt_with(images)
    with torch.no_grad():
        uncached = model(**inputs, use_cache=False).logits[0, -1]
        beams = model.generate(**inputs, max_new_tokens=1, num_beams=2, do_sample=False, output_logits=True,
                               return_dict_in_generate=True, pad_token_id=0)
    return float((beams.logits[0] - uncached).abs().max())  # every beam starts from the prompt: same scores


one, two = worst_first_step_difference(1), worst_first_step_difference(2)
print(f"transformers {transformers.__version__}: first-step scores of beam search vs one uncached forward, "
      f"max |logit difference|: one image {one:.3g}, two images {two:.3g} (tolerance {TOLERANCE})")
if one > TOLERANCE:
    print("cannot run: one image already disagrees, so this is not the bug this script isolates", file=sys.stderr)
    sys.exit(2)
print("REPRODUCED" if two > TOLERANCE else "not reproduced")
raise SystemExit(1 if two > TOLERANCE else 0)
