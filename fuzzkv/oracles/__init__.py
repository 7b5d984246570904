"""Oracles: each states one property a KV cache must keep, as paths that must agree.

Each oracle is one :class:`~fuzzkv.oracles.interface.Oracle` object, declared in its own module; this
module is the catalogue built from their registrations: fuzzkv's own (the modules below, like pytest's
built-in plugins) and any other package's, through the ``fuzzkv.oracles`` entry point group (each entry
point names an ``Oracle`` object)::

    [project.entry-points."fuzzkv.oracles"]
    my-oracle = "my_package.my_oracle:MY_ORACLE"

Nothing here or in the oracles' modules imports torch, so the CLI lists and validates oracles without a
model. :func:`.check.check` runs an oracle's comparisons; an exception in a path is itself a finding
(kind "error"), never a crash of fuzzkv.
"""

from __future__ import annotations

from typing import Any

from fuzzkv.oracles import attention, beam, compiled, core, cross, paged, prefix, quantized, speculative, tl
from fuzzkv.oracles.interface import Comparison, Oracle
from fuzzkv.plugins import Registry

__all__ = ["ENTRY_POINTS", "ORACLES", "Comparison", "Oracle"]

ENTRY_POINTS = "fuzzkv.oracles"

# fuzzkv's own oracles, in the order runs and listings show them.
BUILTIN: tuple[Oracle[Any], ...] = (
    core.DECODE, core.BATCH, core.CHUNKED, core.CACHE_IMPL, core.CACHE_REUSE, core.GENERATE, tl.TL_DECODE,
    cross.CROSS, beam.BEAM, core.OFFLOADED, attention.ATTN_IMPL, speculative.ASSISTED, prefix.PREFIX_REUSE,
    compiled.COMPILED, quantized.QUANTIZED, paged.CONTINUOUS)


ORACLES: Registry[Oracle[Any]] = Registry(ENTRY_POINTS, Oracle, lambda: BUILTIN, lambda oracle: oracle.name)
