"""Library version combinations with a known real bug, each with its write-up in findings/.

Tests that assert a combination is clean skip on these (the clean assertion runs in a CI
environment with a clean combination); tests in test_findings.py assert fuzzkv reports each bug
where it is present. A table, so the next rename or regression is one row.
"""

from __future__ import annotations

from importlib import metadata


def _version(package: str) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in metadata.version(package).split(".")[:3] if part.isdigit())
    except metadata.PackageNotFoundError:
        return None


# (finding, transformer-lens versions affected, transformers at or above which it shows)
KNOWN = [
    ("findings/transformerlens-bridge-ignores-cache-kwarg.md", {(4, 3, 0)}, (5, 24)),
]


def tl_cache_bug_reason() -> str | None:
    """Why TransformerLens's cached path cannot be clean here, or None where no known bug applies."""
    tl, hf = _version("transformer-lens"), _version("transformers")
    for finding, tl_versions, hf_from in KNOWN:
        if tl in tl_versions and hf is not None and hf >= hf_from:
            return (f"TransformerLens {'.'.join(map(str, tl))} with transformers {'.'.join(map(str, hf))} has a known "
                    f"cache bug ({finding}): its clean runs are checked in the transformers 5.23 environment")
    return None


# transformers bugs with a standalone script in findings/ that exits 1 where they are present:
# (finding, first transformers release checked affected). The scripts drive 5.24's cache= keyword.
SCRIPTED = [
    ("transformers-continuous-batching-fails-stablelm-nemotron", (5, 24)),
    ("transformers-continuous-batching-fails-gpt-neox", (5, 24)),
    ("transformers-continuous-batching-fails-mpt", (5, 24)),
    ("transformers-quantized-cache-batch-select-fails", (5, 24)),
    ("optimum-quanto-quantized-cache-deepcopy-fails", (5, 24)),
    ("transformers-quanto-cache-axis-minus-one-fails-most-lengths", (5, 24)),
    ("transformers-hqq-cache-low-bits-fail", (5, 24)),
    ("transformers-continuous-batching-fails-bloom-falcon", (5, 24)),
    ("transformers-continuous-batching-drops-attention-softcap", (5, 24)),
    ("transformers-prompt-lookup-static-cache-overflow", (5, 24)),
    ("transformers-mamba1-multi-token-cached-forward-drops-ssm-state", (5, 24)),
    ("transformers-zamba2-nemotronh-decode-skips-dt-clamp", (5, 24)),
    ("transformers-dynamiccache-reset-keeps-state-batch", (5, 24)),
    ("transformers-falcon-alibi-static-cache-generate", (5, 24)),
    ("transformers-gpt-neo-local-attention-static-cache", (5, 24)),
    ("transformers-hybrid-sliding-static-generate-mask", (5, 24)),
    ("transformers-inkling-static-cache-query-offset-alias", (5, 24)),
    ("transformers-llama4-temperature-tuning-ignores-position-ids", (5, 24)),
    ("transformers-dsa-indexer-topk-tie-order", (5, 24)),
    ("transformers-doge-dynamic-mask-topk-tie-order", (5, 24)),
    ("transformers-deepseek-v4-compressor-ignores-padding", (5, 24)),
    ("transformers-recurrent-padding-mask-skipped-on-single-token-forward", (5, 24)),
]


# The quantized-cache backends a script needs besides transformers (installed with fuzzkv[quantized]).
NEEDS = {"optimum-quanto-quantized-cache-deepcopy-fails": "optimum-quanto",
         "transformers-quanto-cache-axis-minus-one-fails-most-lengths": "optimum-quanto",
         "transformers-hqq-cache-low-bits-fail": "hqq"}


def scripted_reason(finding: str) -> str | None:
    """Why ``finding``'s script is not expected to reproduce here (None: it must)."""
    hf = _version("transformers")
    affected = dict(SCRIPTED)[finding]
    if hf is None or hf < affected:
        return f"{finding} was found on transformers {'.'.join(map(str, affected))}; this is an older release"
    if finding in NEEDS and _version(NEEDS[finding]) is None:
        return f"{finding} needs {NEEDS[finding]} (pip install 'fuzzkv[quantized]')"
    return None
