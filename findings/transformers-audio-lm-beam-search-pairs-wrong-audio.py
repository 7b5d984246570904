"""transformers expands an audio LM's audio features for beam search clip by clip ([A, A, B, B]) where each beam
needs the prompt's whole group of clips ([A, B, A, B]): with two audio chunks in one prompt (two clips, or one
clip over 30 s, which Voxtral's processor splits into 30 s chunks stacked along the batch dimension), the first
beam hears the first chunk twice and the second beam the second twice, and their first-step scores are not the
prompt's.

Builds a tiny Voxtral (seeded random weights), lays one prompt out as its processor does (each chunk a run of
audio tokens), and compares the scores generate() gives the first new token with num_beams=2 against one uncached
forward over the prompt. One chunk per prompt agrees (the control). Needs torch and transformers; no download.
Exit 1: reproduced; 0: the paths agree (the fix); 2: cannot run here.
"""

import sys

# Exit 1 only where the bug reproduces, 0 where it does not, 2 where this script cannot run here: a package missing,
# a release without what it drives, or any exception other than the bug's (its traceback is printed).
sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))
try:
    import torch
    import transformers
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration
except ImportError as error:
    print(f"cannot run: {error} (pip install torch 'transformers>=4.54')", file=sys.stderr)
    sys.exit(2)

TOLERANCE = 1e-3  # float32 rounding between these paths is ~1e-5 here
AUDIO = 24  # Voxtral's audio token (its processor's audio_token_id)
MEL_BINS, POSITIONS = 128, 16  # a chunk: 128 mel bins x 32 frames (its convolutions halve them to 16 positions)
CONFIG = VoxtralConfig(
    audio_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_mel_bins=MEL_BINS, max_source_positions=POSITIONS),
    text_config=dict(model_type="llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    audio_token_id=AUDIO)
TOKENS_PER_CHUNK = POSITIONS * 64 // 128  # its projector joins intermediate_size / hidden_size = 2 positions a token

torch.manual_seed(0)
model = VoxtralForConditionalGeneration(CONFIG).eval()
with torch.no_grad():
    for parameter in model.parameters():  # weights large enough that a swapped chunk moves the logits visibly
        parameter.normal_(0.0, 0.2)


def prompt_with(chunks):
    """Text, then each audio chunk's run of audio tokens; the chunks' mel features stacked, as the processor does."""
    ids = [3]
    for _ in range(chunks):
        ids += [*[AUDIO] * TOKENS_PER_CHUNK, 4]
    features = torch.stack([torch.randn(MEL_BINS, 2 * POSITIONS, generator=torch.Generator().manual_seed(i))
                            for i in range(chunks)])
    ids = torch.tensor([ids])
    return dict(input_ids=ids, attention_mask=torch.ones_like(ids), input_features=features)


def worst_first_step_difference(chunks):
    inputs = prompt_with(chunks)
    with torch.no_grad():
        uncached = model(**inputs, use_cache=False).logits[0, -1]
        beams = model.generate(**inputs, max_new_tokens=1, num_beams=2, do_sample=False, output_logits=True,
                               return_dict_in_generate=True, pad_token_id=0)
    return float((beams.logits[0] - uncached).abs().max())  # every beam starts from the prompt: same scores


one, two = worst_first_step_difference(1), worst_first_step_difference(2)
print(f"transformers {transformers.__version__}: first-step scores of beam search vs one uncached forward, "
      f"max |logit difference|: one audio chunk {one:.3g}, two chunks {two:.3g} (tolerance {TOLERANCE})")
if one > TOLERANCE:
    print("cannot run: one chunk already disagrees, so this is not the bug this script isolates", file=sys.stderr)
    sys.exit(2)
print("REPRODUCED" if two > TOLERANCE else "not reproduced")
raise SystemExit(1 if two > TOLERANCE else 0)
