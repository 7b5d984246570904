"""Resolve ``--model`` to a HuggingFace causal LM, offline, every time.

Forms accepted, tried in this order:
1. ``package.module:factory`` - a zero-argument callable returning a ``PreTrainedModel``.
   This runs the user's code by design; its weights are never re-initialised.
2. a local directory written by ``save_pretrained``.
3. a registry name (``fuzzkv models``): real weights if the local HuggingFace cache
   holds them (full scale only), otherwise the real architecture with seeded random
   weights.
4. any causal-LM ``model_type`` (``qwen3``) or class name (``Qwen3ForCausalLM``) of the installed
   transformers (``fuzzkv models --all``): its config class's defaults (``--scale full``, if they fit
   in memory) or their generic tiny twin (``--scale tiny``), with seeded random weights.
5. a hub id already in the local HuggingFace cache.
No path ever makes a network call: ``local_files_only`` is always set.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Set before transformers is imported anywhere: fuzzkv never talks to the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import transformers  # noqa: E402

from fuzzkv import registry  # noqa: E402
from fuzzkv.backends import hf_shrink  # noqa: E402
from fuzzkv.backends.hf_paths import pretrained, random_model, sensitise  # noqa: E402
from fuzzkv.errors import CannotBuildModel, NotFuzzable, UsageError  # noqa: E402

__all__ = ["LoadedModel", "build_random", "load_model", "load_tokenizer", "sensitise"]
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
transformers.logging.set_verbosity_error()


@dataclass
class LoadedModel:
    model: transformers.PreTrainedModel
    source: str  # one line saying where the weights came from
    spec: registry.ModelSpec | None = None
    factory: str | None = None
    random_weights: bool = False
    config_dict: dict | None = None  # the config random weights were built from
    seed: int = 0
    init_std: float = 0.0
    tokenizer_from: str | None = None  # where real weights came from: a tokenizer may sit beside them
    gguf_file: str | None = None  # the GGUF file in the tokenizer_from directory the weights came from
    attn_switched: bool = False  # a factory's model was switched to --attn (transformers 5.x can; 4.x cannot)
    name: str | None = None  # the model_type of a generic architecture (registry entries name themselves)


def load_tokenizer(path: str | None, gguf_file: str | None = None):
    """The tokenizer saved beside real weights (or inside their GGUF file), from local files only; None when there is none."""
    if path is None:
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                          **({"gguf_file": gguf_file} if gguf_file else {}))
    except Exception:  # noqa: BLE001 - no tokenizer (or an unreadable one) only means no decoded text
        return None


def load_model(name: str, *, scale: str, seed: int, init_std: float, attn: str) -> LoadedModel:
    """Resolve ``name`` as described in the module docstring, in float32 on the CPU."""
    if ":" in name and not Path(name).exists():
        return _from_factory(name)
    local = _local_weights(Path(name))
    if local is not None:
        directory, gguf_file = local
        try:
            model = pretrained(directory, attn, gguf_file)
        except OSError as exc:
            raise UsageError(f"cannot load a model from {name}: {str(exc).splitlines()[0]}",
                             tip="fuzzkv loads safetensors or GGUF weights only (never pickles): re-save the model "
                                 "with save_pretrained(..., safe_serialization=True)") from None
        what = f"GGUF file {Path(directory) / gguf_file}" if gguf_file else f"local directory {name}"
        return LoadedModel(model, f"weights from {what}", tokenizer_from=directory, gguf_file=gguf_file)
    spec = registry.get(name)
    if spec is not None:
        return _from_registry(spec, scale=scale, seed=seed, init_std=init_std, attn=attn)
    model_type = generic_model_type(name)
    if model_type is not None:
        return _from_generic(model_type, scale=scale, seed=seed, init_std=init_std, attn=attn)
    try:
        return LoadedModel(_pretrained(name, attn), f"weights for {name} from the local HuggingFace cache",
                           tokenizer_from=name)
    except OSError:
        close = registry.suggestions(name)
        close = [*close, *difflib.get_close_matches(name, hf_shrink.causal_lm_types(), n=3, cutoff=0.6)]
        hint = (f"did you mean {', '.join(close)}?" if close
                else "run 'fuzzkv models' for the registry names, 'fuzzkv models --all' for every architecture")
        raise UsageError(f"unknown model {name!r}: not a registry name, a causal-LM model type of transformers "
                         f"{transformers.__version__}, a local directory, a module:factory, or a hub id in the local "
                         "HuggingFace cache.", tip=hint) from None


def _pretrained(path: str, attn: str):
    return pretrained(path, attn)


def _local_weights(path: Path) -> tuple[str, str | None] | None:
    """(directory, GGUF file name or None) for a local directory or a ``.gguf`` file; None otherwise.
    A directory without safetensors but with GGUF files uses the first GGUF file (sorted)."""
    if path.is_file() and path.suffix == ".gguf":
        return str(path.parent), path.name
    if not path.is_dir():
        return None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))
    if ggufs and not any(path.glob("*.safetensors")):
        return str(path), ggufs[0]
    return str(path), None


def _from_factory(name: str) -> LoadedModel:
    if not FACTORY_PATTERN.match(name):
        raise UsageError(f"malformed factory {name!r}.", tip="write it as package.module:function")
    module_name, attr = name.split(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn and gunicorn: factories import from the current directory
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - user code: any exception is a usage problem, reported in one line
        raise UsageError(f"cannot import {module_name!r} for factory {name!r}: {type(exc).__name__}: {exc}",
                         tip="check the module is importable (on PYTHONPATH) from this directory") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{name!r} is not a callable in {module_name}.", tip="point at a zero-argument function")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code: its failure is the user's to fix, said in one line
        raise UsageError(f"factory {name!r} raised {type(exc).__name__}: {exc}",
                         tip=f"call {attr}() from {module_name} in Python to see the traceback") from None
    if not isinstance(model, transformers.PreTrainedModel):
        raise UsageError(f"factory {name!r} returned {type(model).__name__}, not a transformers PreTrainedModel.",
                         tip="return a causal LM such as AutoModelForCausalLM.from_config(...)")
    return LoadedModel(model, f"model from factory {name} (its weights are used as they are)", factory=name)


def _from_registry(spec, *, scale, seed, init_std, attn) -> LoadedModel:
    if scale == "full":
        try:
            model = _pretrained(spec.hub_id, attn)
            return LoadedModel(model, f"real weights for {spec.hub_id} from the local HuggingFace cache", spec=spec,
                               tokenizer_from=spec.hub_id)
        except OSError:
            pass  # not cached locally: fall through to random weights, and say so
    config = spec.config_for(scale)
    model = build_random(config, seed=seed, init_std=init_std, attn=attn)
    source = (f"no local weights for {spec.hub_id}: built the {scale} {spec.architecture} "
              f"with seeded random weights (seed {seed}, init std {init_std})")
    return LoadedModel(model, source, spec=spec, random_weights=True, config_dict=config, seed=seed,
                       init_std=init_std)


def build_random(config: dict, *, seed: int, init_std: float, attn: str):
    """The architecture of ``config`` with seeded random weights (see ``hf_paths.random_model``)."""
    try:
        return random_model(config, seed, init_std, attn)
    except ValueError as exc:
        if "model type" not in str(exc).lower() and "unrecognized" not in str(exc).lower():
            raise
        raise UsageError(f"transformers {transformers.__version__} does not know model type "
                         f"{config.get('model_type')!r}.", tip="upgrade transformers, or pick another model") from None


def generic_model_type(name: str) -> str | None:
    """The causal-LM ``model_type`` ``name`` names, as a model type or a class name; None if neither."""
    types = hf_shrink.causal_lm_types()
    if name in types:
        return name
    return next((t for t in types if hf_shrink.causal_lm_class(t) == name), None)


def _from_generic(model_type: str, *, scale, seed, init_std, attn) -> LoadedModel:
    kind, why = hf_shrink.kind(model_type)
    if kind != "decoder-only":
        raise NotFuzzable(f"{model_type} is not a decoder-only language model ({kind}: {why}).",
                         tip="fuzzkv fuzzes decoder-only causal LMs; 'fuzzkv models --all' lists them")
    try:
        config = hf_shrink.tiny_config(model_type) if scale == "tiny" else hf_shrink.default_config(model_type)
    except hf_shrink.CannotBuild as exc:
        raise CannotBuildModel(f"cannot build a {scale} {model_type}: {exc}",
                               tip="report it; 'fuzzkv models --all' lists what builds") from None
    if scale == "full":
        _check_fits(config, model_type)
    try:
        model = build_random(config, seed=seed, init_std=init_std, attn=attn)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the config's own validation or construction failed: say so in one line
        first = (str(exc).splitlines() or [""])[0][:300]
        raise CannotBuildModel(f"cannot build a {scale} {model_type}: {type(exc).__name__}: {first}",
                               tip="try --scale tiny, or another --attn") from None
    source = (f"{model_type}: the {scale} twin of transformers' {hf_shrink.causal_lm_class(model_type)} defaults, "
              f"with seeded random weights (seed {seed}, init std {init_std})")
    return LoadedModel(model, source, random_weights=True, config_dict=config, seed=seed, init_std=init_std,
                       name=model_type)


# float32 weights, a float64 twin for calibration (twice as large), and room for activations.
BYTES_PER_PARAMETER = 4 + 8 + 4


def _check_fits(config: dict, model_type: str) -> None:
    """Refuse a full-scale architecture whose weights cannot fit in this machine's free memory."""
    parameters = parameter_count(config)
    needed, free = parameters * BYTES_PER_PARAMETER, _available_memory()
    if free is not None and needed > free:
        raise UsageError(f"the full {model_type} ({parameters / 1e9:.1f}B parameters) needs about "
                         f"{needed / 2**30:.0f} GiB, and {free / 2**30:.0f} GiB is free.",
                         tip="use --scale tiny (the generic tiny twin keeps every cache feature)")


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def parameter_count(config: dict) -> int:
    """How many parameters ``config``'s causal LM has, counted on the meta device (no memory used)."""
    import torch

    config = dict(config)
    cfg = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())
