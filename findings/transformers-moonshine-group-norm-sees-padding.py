"""transformers' Moonshine normalises its encoder's first convolution over the whole padded clip (a GroupNorm of one
group: the mean and variance of every channel and every frame, padding included), so a clip padded in a batch is
encoded differently from the same clip alone, although the attention mask marks the padding: a row's decoder logits
depend on the lengths of the other rows in its batch.

Builds a tiny Moonshine (seeded random weights), encodes a 0.2 s clip alone and padded to 0.4 s beside a 0.4 s clip
(padding and mask as its feature extractor gives them: zeros on the right, 0 in attention_mask), and compares the
first decoder step's logits for that row. Two clips of one length (no padding) agree (the control). Needs torch and
transformers; no download. Exit 1: reproduced; 0: the paths agree (the fix); 2: cannot run here.
"""

import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import MoonshineConfig, MoonshineForConditionalGeneration
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=4.48')", file=sys.stderr)
    sys.exit(2)

TOLERANCE = 1e-3  # float32 rounding between these paths is ~1e-6 here
SHORT, LONG = 3200, 6400  # samples at 16 kHz: 0.2 s and 0.4 s
CONFIG = MoonshineConfig(vocab_size=512, hidden_size=64, intermediate_size=128, encoder_num_hidden_layers=1,
                         decoder_num_hidden_layers=1, encoder_num_attention_heads=4, decoder_num_attention_heads=4,
                         encoder_num_key_value_heads=4, decoder_num_key_value_heads=4, decoder_start_token_id=1)

torch.manual_seed(0)
model = MoonshineForConditionalGeneration(CONFIG).eval()
with torch.no_grad():
    for parameter in model.parameters():  # weights large enough that a changed encoding moves the logits visibly
        parameter.normal_(0.0, 0.2)
clip = torch.randn(SHORT, generator=torch.Generator().manual_seed(1))


def first_step(audio, mask):
    start = torch.full((audio.shape[0], 1), CONFIG.decoder_start_token_id)
    with torch.no_grad():
        return model(input_values=audio, attention_mask=mask, decoder_input_ids=start).logits[:, -1]


def difference_beside(other_length):
    """The clip's first-step logits beside a clip of ``other_length`` samples vs alone."""
    alone = first_step(clip[None], torch.ones(1, SHORT, dtype=torch.long))
    width = max(SHORT, other_length)
    audio, mask = torch.zeros(2, width), torch.zeros(2, width, dtype=torch.long)
    audio[0, :SHORT], mask[0, :SHORT] = clip, 1  # padded on the right, as its feature extractor pads
    audio[1, :other_length] = torch.randn(other_length, generator=torch.Generator().manual_seed(2))
    mask[1, :other_length] = 1
    return float((first_step(audio, mask)[0] - alone[0]).abs().max())


same, padded = difference_beside(SHORT), difference_beside(LONG)
print(f"transformers {transformers.__version__}: a 0.2 s clip's first decoder step in a batch vs alone, max |logit "
      f"difference|: beside a 0.2 s clip {same:.3g}, padded beside a 0.4 s clip {padded:.3g} (tolerance {TOLERANCE})")
if same > TOLERANCE:
    print("cannot run: an unpadded batch already disagrees, so this is not the bug this script isolates", file=sys.stderr)
    sys.exit(2)
print("REPRODUCED" if padded > TOLERANCE else "not reproduced")
raise SystemExit(1 if padded > TOLERANCE else 0)
