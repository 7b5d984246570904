"""Every generative architecture of the installed transformers (causal-LM, image-text-to-text, multimodal-LM,
seq2seq and speech-seq2seq mappings), as ``fuzzkv models --all`` lists it.

Each row says where fuzzkv's config comes from (a curated registry entry, or the generic tiny twin of
the config class's defaults), the cache features detected from the config, and whether the tiny twin
builds here; what does not build is listed with the reason, never silently dropped.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from fuzzkv import registry
from fuzzkv.models import shrink as hf_shrink
from fuzzkv.models import twins
from fuzzkv.models.offline import go_offline


@dataclass(frozen=True)
class Architecture:
    """One row of ``fuzzkv models --all`` (``--json`` prints these fields)."""

    name: str  # what --model takes: the registry name where curated, else the model_type
    model_type: str
    model_class: str  # the class of its first mapping (``mappings``)
    source: str  # "curated" (registry) or "generic" (shrunk config-class defaults)
    kind: str  # "decoder-only", "encoder-decoder", "multimodal" (fuzzed where they build), or what else it is
    features: tuple[str, ...]
    builds: bool  # whether the tiny twin builds and runs here
    reason: str = ""  # why it is not fuzzed, when it is not
    seconds: float = 0.0
    mappings: tuple[str, ...] = ()  # the transformers auto mappings that list it ("causal-lm", "seq2seq", ...)

    def to_dict(self) -> dict:
        return asdict(self)


def curated_by_type() -> dict[str, str]:
    """model_type -> the registry name that curates it (the first, sorted, where several do)."""
    names: dict[str, str] = {}
    for name in registry.names():
        spec = registry.get(name)
        assert spec is not None  # every listed name is registered
        names.setdefault(spec.model_type, name)
    return names


def architectures() -> list[Architecture]:
    """Every generative model type of the installed transformers, sorted by model type. Building each
    decoder-only tiny twin takes about a second: the whole list, a few minutes."""
    go_offline()
    curated = curated_by_type()
    return [describe(model_type, curated.get(model_type)) for model_type in hf_shrink.generative_types()]


def describe(model_type: str, curated_name: str | None) -> Architecture:
    started = time.monotonic()
    kind, why = hf_shrink.kind(model_type)
    source = "curated" if curated_name else "generic"
    name = curated_name or model_type
    mappings = tuple(mapping for mapping, _ in hf_shrink.generative_types()[model_type])
    row = Architecture(name, model_type, hf_shrink.model_class(model_type), source, kind, (), False, mappings=mappings)
    if not hf_shrink.fuzzed(model_type):
        return _with(row, started, builds=False, reason=f"not fuzzed: {kind} ({why})")
    try:
        config = registry_tiny(curated_name) if curated_name else twins.tiny_config(model_type)
    except hf_shrink.CannotBuild as exc:
        return _with(row, started, builds=False, reason=f"could not build: {exc}")
    # tiny_config builds and runs the generic twin before it returns; registry entries are tested.
    return _with(row, started, features=hf_shrink.features(config), builds=True)


def registry_tiny(name: str) -> dict:
    spec = registry.get(name)
    assert spec is not None  # only registry names reach here
    return {"model_type": spec.model_type, **spec.config_for("tiny")}


def _with(row: Architecture, started: float, **changes) -> Architecture:
    data = {**row.to_dict(), **changes, "seconds": round(time.monotonic() - started, 2)}
    return Architecture(**data)


def sweep_names() -> list[str]:
    """What ``fuzzkv sweep --models all`` fuzzes: every registry name (real configs), then every other
    decoder-only, encoder-decoder or vision-language model type by its generic tiny twin."""
    go_offline()
    curated = curated_by_type()
    generic = [t for t in hf_shrink.generative_types() if t not in curated and hf_shrink.fuzzed(t)]
    return registry.names() + generic
