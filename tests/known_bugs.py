"""Library version combinations with a known real bug, each with its write-up in findings/.

Tests that assert a combination is clean skip on these (the clean assertion runs in a CI
environment with a clean combination); tests in test_findings.py assert fuzzkv reports each bug
where it is present. A table, so the next rename or regression is one row.
"""

from __future__ import annotations

from importlib import metadata


def _version(package: str) -> tuple[int, ...] | None:
    try:
        release = metadata.version(package).split("+")[0]  # "0.6.1+cpu": the local build tag is not the release
        return tuple(int(part) for part in release.split(".")[:3] if part.isdigit())
    except metadata.PackageNotFoundError:
        return None


# (finding, transformer-lens releases affected [from, before), transformers at or above which it shows, whether only
# padded batches show it: an explicit attention mask is what TransformerLens before 2.9 never stores in its cache)
KNOWN: list[tuple[str, tuple[tuple[int, ...], tuple[int, ...]], tuple[int, ...], bool]] = [
    ("findings/transformerlens-bridge-ignores-cache-kwarg.md", ((4, 3, 0), (4, 3, 1)), (5, 24), False),
    ("findings/transformerlens-attention-mask-with-cache-before-2-9.md", ((0,), (2, 9)), (0,), True),
]


def tl_cache_bug_reason(padded: bool = True) -> str | None:
    """Why TransformerLens's cached path cannot be clean here, or None where no known bug applies.

    ``padded``: whether the cases concerned include padded batches (some bugs show only with an attention mask)."""
    tl, hf = _version("transformer-lens"), _version("transformers")
    if tl is None or hf is None:
        return None
    for finding, (tl_from, tl_before), hf_from, padded_only in KNOWN:
        if tl_from <= tl < tl_before and hf >= hf_from and (padded or not padded_only):
            return (f"TransformerLens {'.'.join(map(str, tl))} with transformers {'.'.join(map(str, hf))} has a known "
                    f"cache bug ({finding}): its clean runs are checked in another CI environment")
    return None


# TransformerLens releases whose HookedTransformer.generate() attends to a left-padded batch's padding (it infers the
# mask from a tensor of zeros, not the prompt): [from, before). Checked: 2.13.0, 2.18.0, 3.0.0 affected; 2.11.0, 3.1.0
# not (TransformerLens PR #999). fuzzkv meets it where tl-decode runs generate on the padded batch whole (padding_mode
# "inferred"): findings/transformerlens-generate-ignores-left-padding-2-13.md.
GENERATE_IGNORES_PADDING = ((2, 13), (3, 1))


def tl_generate_ignores_padding() -> bool:
    """Whether the installed TransformerLens's generate() attends to a padded batch's padding."""
    tl = _version("transformer-lens")
    return tl is not None and GENERATE_IGNORES_PADDING[0] <= tl[:2] < GENERATE_IGNORES_PADDING[1]


# Bugs with a standalone script in findings/ that exits 1 where they are present: (finding, the library it is a
# bug of, the first release of it checked affected). Every script in findings/ exits 1 only where its bug
# reproduces, 0 where it ran and the bug is absent, 2 where it cannot run (tests/test_finding_scripts.py).
SCRIPTED: list[tuple[str, str, tuple[int, ...]]] = [
    ("torchtune-gemma2-feed-forward-norms-swapped", "torchtune", (0, 6, 1)),
    ("torchtune-gemma2-final-softcap-on-hidden-state", "torchtune", (0, 6, 1)),
    ("torchtune-gemma2-sliding-window-cache-query-offset", "torchtune", (0, 6, 1)),
    ("torchtune-kv-cache-smaller-batch-raises", "torchtune", (0, 6, 1)),
    ("transformers-continuous-batching-fails-stablelm-nemotron", "transformers", (5, 24)),
    ("transformers-continuous-batching-fails-gpt-neox", "transformers", (5, 24)),
    ("transformers-continuous-batching-fails-mpt", "transformers", (5, 24)),
    ("transformers-quantized-cache-batch-select-fails", "transformers", (5, 24)),
    ("optimum-quanto-quantized-cache-deepcopy-fails", "transformers", (5, 24)),
    ("transformers-quanto-cache-axis-minus-one-fails-most-lengths", "transformers", (5, 24)),
    ("transformers-hqq-cache-low-bits-fail", "transformers", (5, 24)),
    ("transformers-continuous-batching-fails-bloom-falcon", "transformers", (5, 24)),
    ("transformers-continuous-batching-drops-attention-softcap", "transformers", (5, 24)),
    ("transformers-prompt-lookup-static-cache-overflow", "transformers", (5, 24)),
    ("transformers-mamba1-multi-token-cached-forward-drops-ssm-state", "transformers", (5, 24)),
    ("transformers-zamba2-nemotronh-decode-skips-dt-clamp", "transformers", (5, 24)),
    ("transformers-dynamiccache-reset-keeps-state-batch", "transformers", (5, 24)),
    ("transformers-falcon-alibi-static-cache-generate", "transformers", (5, 24)),
    ("transformers-gpt-neo-local-attention-static-cache", "transformers", (5, 24)),
    ("transformers-hybrid-sliding-static-generate-mask", "transformers", (5, 24)),
    ("transformers-inkling-static-cache-query-offset-alias", "transformers", (5, 24)),
    ("transformers-llama4-temperature-tuning-ignores-position-ids", "transformers", (5, 24)),
    ("transformers-dsa-indexer-topk-tie-order", "transformers", (5, 24)),
    ("transformers-doge-dynamic-mask-topk-tie-order", "transformers", (5, 24)),
    ("transformers-deepseek-v4-compressor-ignores-padding", "transformers", (5, 24)),
    ("transformers-recurrent-padding-mask-skipped-on-single-token-forward", "transformers", (5, 24)),
    # Run on 4.57.6, 5.23.0 and 5.25.0 (reproduced on each).
    ("transformers-fsmt-cached-decoder-drops-causal-mask", "transformers", (4, 57)),
    ("transformers-led-nllb-moe-static-cache-decode-step", "transformers", (4, 57)),
    ("transformers-audio-lm-beam-search-pairs-wrong-audio", "transformers", (4, 57)),
    ("transformers-moonshine-group-norm-sees-padding", "transformers", (4, 57)),
    ("transformers-gemma2-static-cache-generate-mask-4-46", "transformers", (4, 46)),
    ("transformers-sliding-window-cache-long-prompt-4-46", "transformers", (4, 46)),
    ("transformers-gpt-neox-static-cache-generate-4-46", "transformers", (4, 46)),
    ("transformers-dynamiccache-reset-keeps-keys-4-57", "transformers", (4, 57)),
    ("transformers-mpt-static-cache-mask-4-57", "transformers", (4, 57)),
    # Run on 5.23.0 and 5.25.0 (reproduced on each).
    ("transformers-glm4v-beam-search-pairs-wrong-images", "transformers", (5, 23)),
    ("transformers-hunyuan-vl-image-index-counts-across-batch", "transformers", (5, 23)),
    # Run on 5.23.0 and 5.25.0; the unset that causes it is in the source of 5.0.0 (and 5.0.0rc2) and 5.24.0.
    ("transformers-generate-hybrid-cache-ignored", "transformers", (5, 0)),
    ("transformerlens-generate-ignores-left-padding-2-13", "transformer-lens", (2, 13)),
    # Run on 2.3.0 (reproduced) and 2.8.1 (absent); the fix is TransformerLens PR #694.
    ("transformerlens-gemma2-attention-scale-2-3-0", "transformer-lens", (2, 3)),
]
# Bugs gone by a later release, with the first release checked not to have them (their scripts print "not reproduced"
# and exit 0 there); releases in between were not checked.
GONE_BY = {"transformers-gemma2-static-cache-generate-mask-4-46": (4, 57),
           "transformers-sliding-window-cache-long-prompt-4-46": (4, 57),
           "transformers-gpt-neox-static-cache-generate-4-46": (4, 57),
           "transformers-dynamiccache-reset-keeps-keys-4-57": (5, 23),
           "transformers-mpt-static-cache-mask-4-57": (5, 23),
           # 5.25.0's masking_utils maps "hybrid_sliding" layers' sliding mask to create_sliding_window_causal_mask
           # (5.24.0: create_causal_mask), the one line that differs for it between the two wheels.
           "transformers-hybrid-sliding-static-generate-mask": (5, 25),
           "transformerlens-generate-ignores-left-padding-2-13": GENERATE_IGNORES_PADDING[1],
           "transformerlens-gemma2-attention-scale-2-3-0": (2, 8)}


# The releases a script refuses, exiting 2 ("cannot run": it drives an API they lack): finding -> (library, the first
# release it drives, the first it no longer drives or None).
DRIVES: dict[str, tuple[str, tuple[int, ...], tuple[int, ...] | None]] = {
    # These pass the cache= keyword of 5.24 (5.23 and earlier take past_key_values=).
    **{f"transformers-{name}": ("transformers", (5, 24), None) for name in (
        "deepseek-v4-compressor-ignores-padding", "doge-dynamic-mask-topk-tie-order", "dsa-indexer-topk-tie-order",
        "dynamiccache-reset-keeps-state-batch", "gpt-neo-local-attention-static-cache",
        "hybrid-sliding-static-generate-mask", "inkling-static-cache-query-offset-alias",
        "mamba1-multi-token-cached-forward-drops-ssm-state", "recurrent-padding-mask-skipped-on-single-token-forward",
        "zamba2-nemotronh-decode-skips-dt-clamp")},
    # DynamicCache.reset() came with the layered caches of 4.56 (4.46.3's DynamicCache has none).
    "transformers-dynamiccache-reset-keeps-keys-4-57": ("transformers", (4, 56), None),
    # Their caches are built from a config (4.56's layered caches).
    "transformers-fsmt-cached-decoder-drops-causal-mask": ("transformers", (4, 56), None),
    "transformers-led-nllb-moe-static-cache-decode-step": ("transformers", (4, 56), None),
    # Moonshine came with transformers 4.48 (earlier releases cannot import MoonshineConfig).
    "transformers-moonshine-group-norm-sees-padding": ("transformers", (4, 48), None),
    # HunYuan-VL: 5.23.0 is the oldest release checked that has it (4.57.6 has none).
    "transformers-hunyuan-vl-image-index-counts-across-batch": ("transformers", (5, 23), None),
    # Voxtral, its model, came with transformers 4.54 (earlier releases cannot import VoxtralConfig).
    "transformers-audio-lm-beam-search-pairs-wrong-audio": ("transformers", (4, 54), None),
    # It feeds the token-type map (mm_token_type_ids) 5.x places M-RoPE positions by.
    "transformers-glm4v-beam-search-pairs-wrong-images": ("transformers", (5, 0), None),
    # generate() before 5.24 refuses assisted generation with a static cache.
    "transformers-prompt-lookup-static-cache-overflow": ("transformers", (5, 24), None),
    # HookedTransformer's 2.x cache (3.x has no past_key_value_caching module), and HookedTransformer (gone in 4.0).
    "transformerlens-attention-mask-with-cache-before-2-9": ("transformer-lens", (0,), (3,)),
    "transformerlens-generate-ignores-left-padding-2-13": ("transformer-lens", (0,), (4,)),
    # HookedTransformer's hard-coded Gemma-2 config of 2.x.
    "transformerlens-gemma2-attention-scale-2-3-0": ("transformer-lens", (0,), (3,)),
}
# Releases from before a bug, checked to run its script without it (exit 0): finding -> (library, from, before).
CLEAN_BEFORE = {"transformerlens-generate-ignores-left-padding-2-13": ("transformer-lens", (2, 8), GENERATE_IGNORES_PADDING[0]),
                # Continuous batching serves GPT-NeoX and MPT on 5.23.0: their failures came with 5.24.
                "transformers-continuous-batching-fails-gpt-neox": ("transformers", (5, 23), (5, 24)),
                "transformers-continuous-batching-fails-mpt": ("transformers", (5, 23), (5, 24)),
                # generate() builds the static cache an explicit "hybrid" asks for on 4.57.6 (StaticCache) and
                # 4.46.3 (HybridCache for Gemma-2; Llama is refused in words). 5.0.0rc0/rc1 keep 4.57's code (read,
                # not run); rc2 brought the unset.
                "transformers-generate-hybrid-cache-ignored": ("transformers", (4, 46), (5, 0))}
# The TransformerBridge's cache-keyword bug is the pairing of TransformerLens 4.3.0 with transformers 5.24 or later
# (KNOWN above): on transformers 5.23 its script runs clean with TransformerLens 4.3.0 and 3.9.0 alike (the bridge
# is in 3.9 too; earlier 3.x releases were not checked).
BRIDGE = "transformerlens-bridge-ignores-cache-kwarg"


def _release(version: tuple[int, ...] | None) -> str:
    return ".".join(map(str, version)) if version else "none"


def script_exit(finding: str) -> tuple[int, str] | None:
    """The status ``finding``'s script in findings/ must exit with on the installed releases, and why: 1 (its bug is
    present), 0 (checked absent), 2 (a release it does not drive); None where that is not known here."""
    if finding in DRIVES:
        library, first, before = DRIVES[finding]
        installed = _version(library)
        if installed is not None and (installed < first or (before is not None and installed >= before)):
            drives = (f"{_release(first)} and later" if before is None else f"before {_release(before)}"
                      if first == (0,) else f"{_release(first)} to {_release(before)}")
            return 2, f"{finding} drives {library} {drives}, not {_release(installed)}"
    if finding == BRIDGE:
        tl, hf = _version("transformer-lens"), _version("transformers")
        if tl is not None and hf is not None and BRIDGE in (tl_cache_bug_reason(padded=False) or ""):
            return 1, tl_cache_bug_reason(padded=False) or ""
        if tl is not None and hf is not None and hf < (5, 24) and (tl[:2] == (3, 9) or tl[:3] == (4, 3, 0)):
            return 0, f"TransformerLens {_release(tl)} with transformers {_release(hf)} extends its bridge's cache"
        return None
    if finding not in {name for name, _, _ in SCRIPTED} or (finding in NEEDS and _version(NEEDS[finding]) is None):
        return None
    reason = scripted_reason(finding)
    if reason is None:
        return 1, f"{finding} is present here"
    library = next(library for name, library, _ in SCRIPTED if name == finding)
    installed = _version(library)
    if installed is not None and finding in GONE_BY and installed >= GONE_BY[finding]:
        return 0, reason
    if finding in CLEAN_BEFORE:
        library, first, before = CLEAN_BEFORE[finding]
        installed = _version(library)
        if installed is not None and first <= installed < before:
            return 0, f"{finding}: {library} {_release(installed)} predates it"
    return None


# The quantized-cache backends a script needs besides transformers (installed with fuzzkv[quantized]).
NEEDS = {"optimum-quanto-quantized-cache-deepcopy-fails": "optimum-quanto",
         **{finding: "torchtune" for finding, library, _ in SCRIPTED if library == "torchtune"},
         "transformers-quanto-cache-axis-minus-one-fails-most-lengths": "optimum-quanto",
         "transformers-hqq-cache-low-bits-fail": "hqq"}


def scripted_reason(finding: str) -> str | None:
    """Why ``finding``'s script is not expected to reproduce here (None: it must)."""
    library, affected = next((library, first) for name, library, first in SCRIPTED if name == finding)
    if finding in NEEDS and _version(NEEDS[finding]) is None:
        extra = "torchtune" if NEEDS[finding] == "torchtune" else "quantized"
        return f"{finding} needs {NEEDS[finding]} (pip install 'fuzzkv[{extra}]')"
    installed = _version(library)
    if installed is None or installed < affected:
        return f"{finding} was found on {library} {'.'.join(map(str, affected))}; this is an older release"
    if finding in GONE_BY and installed >= GONE_BY[finding]:
        return f"{finding} is gone by {library} {'.'.join(map(str, GONE_BY[finding]))}"
    return None


# Static-cache failures of transformers 4.x releases per (model, transformers minor): the oracle that shows each,
# and its write-up. The clean-on-4.x runs leave those oracles out there, saying why. Each is a real failure fuzzkv
# found when generate() began drawing the release's own cache implementations (2026-11-30) or cache-impl began
# driving a StaticCache on 4.56+ (2026-12-01) and before 4.56 (2026-12-01, the same bugs as generate's).
KNOWN_ON_4 = {
    ("falcon-rw", (4, 46)): {"generate": "findings/transformers-falcon-alibi-static-cache-generate.md (4.46.3 too)"},
    ("falcon-rw", (4, 57)): {"generate": "findings/transformers-falcon-alibi-static-cache-generate.md (4.57.6 too)"},
    ("pythia-70m", (4, 46)): {"generate": "findings/transformers-gpt-neox-static-cache-generate-4-46.md",
                              "cache-impl": "findings/transformers-gpt-neox-static-cache-generate-4-46.md (a "
                                            "StaticCache driven directly too)"},
    ("gemma-2-2b", (4, 46)): {"generate": "findings/transformers-gemma2-static-cache-generate-mask-4-46.md",
                              "cache-impl": "findings/transformers-gemma2-static-cache-generate-mask-4-46.md (a "
                                            "StaticCache driven directly too)"},
    ("mpt", (4, 57)): {"generate": "findings/transformers-mpt-static-cache-mask-4-57.md",
                       "cache-impl": "findings/transformers-mpt-static-cache-mask-4-57.md"},
}


def known_on_4(model: str) -> dict[str, str]:
    """The oracles with a known failure for ``model`` on the installed 4.x release: oracle -> its write-up."""
    release = _version("transformers")
    return KNOWN_ON_4.get((model, release[:2]), {}) if release else {}


# transformers releases whose DynamicCache.reset() zeroes the keys and values in place and keeps them: [from, before).
# 4.56 built caches from layers (fuzzkv drives cache-reuse from there); 5.23 is the first release checked fixed
# (huggingface/transformers#48809); the 5.x releases before it were not checked.
RESET_KEEPS_KEYS = ((4, 56), (5, 23))


def reset_keeps_keys_reason() -> str | None:
    """Why the cache-reuse oracle cannot be clean on a dynamic cache here (None: it must be)."""
    release = _version("transformers")
    if release is not None and RESET_KEEPS_KEYS[0] <= release[:2] < RESET_KEEPS_KEYS[1]:
        return (f"transformers {'.'.join(map(str, release))}: DynamicCache.reset() keeps its zeroed keys "
                "(findings/transformers-dynamiccache-reset-keeps-keys-4-57.md)")
    return None
