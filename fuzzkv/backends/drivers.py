"""The libraries fuzzkv drives, as registered drivers: what ``--backend`` lists and how each is built.

HF (transformers) builds and loads the model; every other backend is converted from the HF backend
(the same weights), so a cross lane compares it with HF. fuzzkv's own drivers are below; another
package adds one through the ``fuzzkv.backends`` entry point group (each entry point names a
:class:`Driver`)::

    [project.entry-points."fuzzkv.backends"]
    my-engine = "my_package.my_backend:DRIVER"

No torch here: the CLI lists the backends without loading a model; a driver's ``convert`` imports its
library only when a run builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fuzzkv.plugins import Registry

if TYPE_CHECKING:
    from fuzzkv.backends.hf.backend import HFBackend
    from fuzzkv.backends.interface import Backend

ENTRY_POINTS = "fuzzkv.backends"
HF = "hf"  # the backend every other one is converted from


@dataclass(frozen=True)
class Driver:
    """One library fuzzkv drives.

    ``convert``: builds this backend from the HF backend (same weights), raising ``Unsupported`` where it cannot;
    None for HF itself. ``check_installed``: raises a ``UsageError`` naming the install when the library is
    missing, before any model is built. ``cross_lane``: the name of the lane comparing this backend with HF."""

    name: str  # the --backend name, and its own lane's
    title: str  # how comparisons and scripts name it
    library: str  # what --backend's help says it drives
    convert: Callable[[HFBackend], Backend] | None = None
    check_installed: Callable[[], None] | None = None
    cross_lane: str | None = None
    # Given a registry model's tiny config (a dict with model_type), why this library's installed release builds that
    # architecture only from its official configs ("" where it builds any): the model is then its released config
    # with only depth and vocabulary shrunk, on every side of the run.
    official_only: Callable[[dict[str, Any]], str] | None = None


def _tl(hf: HFBackend) -> Backend:
    from fuzzkv.backends.tl.bridge import tl_backend

    return tl_backend(hf)


def _tl_installed() -> None:
    from fuzzkv.backends.tl.bridge import require_installed

    require_installed()


def _tl_official_only(config: dict[str, Any]) -> str:
    from fuzzkv.backends.tl.bridge import official_only

    return official_only(config)


def _torchtune(hf: HFBackend) -> Backend:
    from fuzzkv.backends.tune.backend import tune_backend

    return tune_backend(hf)


BUILTIN = (
    Driver(HF, "HF", "transformers"),
    # "cross", not "cross-tl": the name stored failures carry since 0.1.
    Driver("tl", "TransformerLens", "TransformerLens", _tl, _tl_installed, cross_lane="cross",
           official_only=_tl_official_only),
    Driver("torchtune", "torchtune", "torchtune, its model converted from the HF one", _torchtune,
           cross_lane="cross-torchtune"),
)


DRIVERS: Registry[Driver] = Registry(ENTRY_POINTS, Driver, lambda: BUILTIN, lambda driver: driver.name)


def cross_lane_name(candidate: str) -> str:
    """The lane of the cross oracle comparing HF with ``candidate``."""
    driver = DRIVERS.get(candidate)
    return driver.cross_lane if driver is not None and driver.cross_lane else f"cross-{candidate}"


def title_of(backend: str) -> str:
    """How comparisons name ``backend`` ("HF", "TransformerLens", ...)."""
    driver = DRIVERS.get(backend)
    return driver.title if driver is not None else backend
