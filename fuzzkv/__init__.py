"""fuzzkv: property-based fuzzing of language-model KV caches.

A KV cache must change nothing but speed. fuzzkv generates prompts, batch shapes,
padding patterns, prefill chunkings and cache types with Hypothesis, checks that the
cached path computes what the uncached path computes, and shrinks every failure to a
minimal, replayable :class:`~fuzzkv.case.Case`.
"""

__version__ = "0.1.0"
