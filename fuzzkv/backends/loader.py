"""Build the lanes a run asks for: the one place that picks backend implementations.

Heavy imports (torch, transformers, TransformerLens) happen here, when a run starts, never
when the CLI parses its options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.backends.hf import HFBackend
from fuzzkv.backends.interface import Backend, Lane, Lanes, Unsupported
from fuzzkv.backends.lanes import BackendLane, CrossLane
from fuzzkv.config import LANES, fits
from fuzzkv.errors import UsageError

if TYPE_CHECKING:
    from fuzzkv.config import RunConfig


def load_lanes(config: RunConfig) -> Lanes:
    """Build the backends ``config.backend`` asks for ("hf", "tl" or "both") and their lanes."""
    wanted = LANES.get(config.backend)
    if wanted is None:
        raise UsageError(f"unknown backend {config.backend!r}.", tip="use --backend hf, tl or both")
    hf = HFBackend.from_config(config)
    fits(config, hf.info.max_positions, hf.info.name)  # before any store is opened
    built: dict[str, Lane] = {"hf": BackendLane(hf)} if "hf" in wanted else {}
    unsupported: dict[str, str] = {}
    tl: Backend | None = None
    if "tl" in wanted:
        from fuzzkv.backends.tl import tl_backend

        try:
            tl = tl_backend(hf)
        except Unsupported as exc:
            unsupported["tl"] = str(exc)
        else:
            built["tl"] = BackendLane(tl)
    if "cross" in wanted and tl is not None:
        built["cross"] = CrossLane(hf, tl)
    names = list(built) + [f"{lane} (unsupported)" for lane in unsupported]
    description = ", ".join(names) + (f" ({tl.api})" if tl is not None else "")
    return Lanes(hf.info, built, unsupported, description)
