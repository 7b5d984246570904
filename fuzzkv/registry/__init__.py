"""Bundled model architectures: real `config.json` values, usable offline.

Each JSON file in ``configs/`` holds the hub id, a size label, the cache features the
architecture exercises, the real config, and the overrides that make its tiny twin.
Nothing here imports transformers: backends turn a :class:`ModelSpec` into a model.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

FEATURES = ("alibi", "rope", "learned-positions", "sliding-window", "softcap", "gqa", "mqa")


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry."""

    name: str
    hub_id: str
    params: str
    features: tuple[str, ...]
    config: dict
    tiny: dict

    @property
    def model_type(self) -> str:
        return self.config["model_type"]

    @property
    def architecture(self) -> str:
        return (self.config.get("architectures") or [self.model_type])[0]

    def config_for(self, scale: str) -> dict:
        """The config dict at ``scale`` ("full" or "tiny"), without ``model_type``."""
        merged = {**self.config, **(self.tiny if scale == "tiny" else {})}
        return merged


@cache
def _all() -> dict[str, ModelSpec]:
    specs = {}
    for entry in sorted(resources.files(__package__).joinpath("configs").iterdir(), key=lambda p: p.name):
        if not entry.name.endswith(".json"):
            continue
        data = json.loads(entry.read_text())
        name = entry.name[: -len(".json")]
        specs[name] = ModelSpec(
            name=name,
            hub_id=data["hub_id"],
            params=data["params"],
            features=tuple(data["features"]),
            config=data["config"],
            tiny=data.get("tiny", {}),
        )
    return specs


def names() -> list[str]:
    """Registry names, sorted."""
    return sorted(_all())


def get(name: str) -> ModelSpec | None:
    """The spec registered as ``name`` (or under that hub id), or None."""
    specs = _all()
    if name in specs:
        return specs[name]
    return next((s for s in specs.values() if s.hub_id == name), None)


def suggestions(name: str) -> list[str]:
    """Registry names close to a mistyped ``name``, best first."""
    return difflib.get_close_matches(name, names(), n=3, cutoff=0.5)
