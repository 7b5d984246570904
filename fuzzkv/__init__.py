"""fuzzkv: property-based fuzzing of language-model KV caches.

A KV cache must change nothing but speed. fuzzkv generates prompts, batch shapes,
padding patterns, prefill chunkings and cache types with Hypothesis, checks that the
cached path computes what the uncached path computes, and shrinks every failure to a
minimal, replayable :class:`~fuzzkv.case.Case`.

The public API (:mod:`fuzzkv.api`, re-exported here; semantic versioning applies to it)::

    import fuzzkv

    result = fuzzkv.fuzz("llama", scale="tiny", max_examples=20)
    result.raise_for_findings()  # an AssertionError with each minimal case, if the cache is wrong
"""

from typing import TYPE_CHECKING, Any

from fuzzkv._version import __version__

__all__ = ["BlindRun", "Case", "Finding", "FindingsFound", "FuzzkvCheckFailed", "IncompleteRun", "Result",
           "UntestedRun", "Verdict", "__version__", "check", "fuzz"]

if TYPE_CHECKING:
    from fuzzkv.api import BlindRun, Finding, FindingsFound, FuzzkvCheckFailed, IncompleteRun, Result, UntestedRun, check, fuzz
    from fuzzkv.case import Case
    from fuzzkv.verdict import Verdict

_HOMES = {"Case": "fuzzkv.case", "Verdict": "fuzzkv.verdict"}


def __getattr__(name: str) -> Any:
    # Lazy (PEP 562): `import fuzzkv` stays as light as the CLI needs (`fuzzkv --help` loads no torch, nor the
    # run configuration); the API module loads on first use.
    if name in __all__ and name != "__version__":
        import importlib

        return getattr(importlib.import_module(_HOMES.get(name, "fuzzkv.api")), name)
    raise AttributeError(f"module 'fuzzkv' has no attribute {name!r}")
