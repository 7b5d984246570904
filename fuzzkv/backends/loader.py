"""Build the lanes a run asks for: the one place that picks backend implementations.

Heavy imports (torch, transformers, TransformerLens, torchtune) happen here, when a run starts, never
when the CLI parses its options.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv import registry
from fuzzkv.backends.drivers import DRIVERS, HF
from fuzzkv.backends.hf.backend import HFBackend
from fuzzkv.backends.interface import Lane, Lanes, ModelRequest, Unsupported
from fuzzkv.backends.lanes import BackendLane, CrossLane
from fuzzkv.config import backends_of, fits
from fuzzkv.models.offline import go_offline

if TYPE_CHECKING:
    from fuzzkv.config import RunConfig


def official_only(model: str, wanted: tuple[str, ...]) -> str:
    """Why a backend of ``wanted`` builds registry model ``model``'s architecture only from its official configs
    ("" where every one builds any config, or ``model`` is no registry name)."""
    spec = registry.get(model)
    if spec is None:
        return ""
    tiny = {"model_type": spec.model_type, **spec.config_for("tiny")}
    checks = (DRIVERS[name].official_only for name in wanted)
    return next((why for why in (check(tiny) for check in checks if check is not None) if why), "")


def load_lanes(config: RunConfig, given: object = None) -> Lanes:
    """Build the backends ``config.backend`` lists (registered drivers: ``hf``, ``tl``, ``torchtune``, ...,
    comma-separated; ``both``: hf,tl) and their lanes: each backend's own, and with hf listed, a cross lane of HF
    vs each other. ``given``: the model object or factory handed to the Python API, in place of the one
    ``config.model`` names."""
    go_offline()
    wanted = backends_of(config.backend)
    for name in wanted:  # an extra: one line naming its install, before the model is built for nothing
        check = DRIVERS[name].check_installed
        if check is not None:
            check()
    request = ModelRequest(config.model, config.scale, config.dtype, config.device, config.attn, config.init_std,
                           config.weights_seed, config.trust_remote_code, copies=len(wanted),
                           official_only=official_only(config.model, wanted))
    hf = HFBackend.from_request(request, given)
    fits(config, hf.info.max_positions, hf.info.name)  # before any store is opened
    built: dict[str, Lane] = {HF: BackendLane(hf)} if HF in wanted else {}
    unsupported: dict[str, str] = {}
    apis: list[str] = []
    limits: list[str] = []
    for name in (name for name in wanted if name != HF):
        convert = DRIVERS[name].convert
        assert convert is not None, f"backend {name} is not built from the HF backend"
        try:
            other = convert(hf)
        except Unsupported as exc:
            unsupported[name] = str(exc)
            continue
        built[name] = BackendLane(other)
        apis.append(other.api)
        if HF in wanted:
            cross = CrossLane(hf, other)
            built[cross.name] = cross
            if other.agrees_up_to is not None:
                limits.append(f"{cross.name} keeps to {other.agrees_up_to[0]} positions: {other.agrees_up_to[1]}")
    names = list(built) + [f"{lane} (unsupported)" for lane in unsupported]
    description = ", ".join(names) + "".join(f" ({api})" for api in apis if api) + "".join(f"; {x}" for x in limits)
    return Lanes(hf.info, built, unsupported, description)
