"""Resolve ``--model`` to a HuggingFace causal LM, offline, every time.

Forms accepted, tried in this order:
1. ``package.module:factory`` - a zero-argument callable returning a ``PreTrainedModel``.
   This runs the user's code by design; its weights are never re-initialised.
2. a local directory written by ``save_pretrained``: the class its config.json names. A folder that ships its
   own model code (its config.json's ``auto_map``) is refused unless the user passed ``--trust-remote-code``:
   then that code runs, and its class is the model.
3. a registry name (``fuzzkv models``): real weights if the local HuggingFace cache
   holds them (full scale only), otherwise the real architecture with seeded random
   weights.
4. any causal-LM ``model_type`` (``qwen3``) or class name (``Qwen3ForCausalLM``) of the installed
   transformers (``fuzzkv models --all``): its config class's defaults (``--scale full``, if they fit
   in memory) or their generic tiny twin (``--scale tiny``), with seeded random weights.
5. a hub id already in the local HuggingFace cache.
No path ever makes a network call: ``local_files_only`` is always set. No code from a model folder (or a cached
hub repository) runs without ``--trust-remote-code``: ``trust_remote_code`` is always given to transformers.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import transformers  # noqa: E402

from fuzzkv import registry  # noqa: E402
from fuzzkv.backends import precision  # noqa: E402
from fuzzkv.backends.driven import PRECISE  # noqa: E402
from fuzzkv.backends.hf.paths import (  # noqa: E402
    TORCH_DTYPES,
    declared_class,
    dtype_keyword,
    folder_config,
    pretrained,
    random_model,
    sensitise,
    shipped_class,
)
from fuzzkv.errors import CannotBuildModel, NotFuzzable, UsageError  # noqa: E402
from fuzzkv.models import shrink as hf_shrink
from fuzzkv.models import twins  # noqa: E402

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
    # A model object handed to the Python API (``fuzzkv.fuzz(model)``) that no import can rebuild: scripts load
    # it from a copy fuzzkv saves once, on the first reproduction (see ``saved_copy``).
    given: bool = False
    saved_to: str | None = None
    # Built or chosen by --scale (a registry name, a model type); False: the model comes at its own size.
    scaled: bool = False
    # Loaded by running the code its folder ships (--trust-remote-code): its scripts load it the same way.
    trust_remote_code: bool = False


def load_tokenizer(path: str | None, gguf_file: str | None = None):
    """The tokenizer saved beside real weights (or inside their GGUF file), from local files only; None when there is none."""
    if path is None:
        return None
    try:
        # No code of the folder's runs for a tokenizer (it only decodes text for the report), even with the model's.
        return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                          **({"gguf_file": gguf_file} if gguf_file else {}))
    except Exception:  # noqa: BLE001 - no tokenizer (or an unreadable one) only means no decoded text
        return None


@contextlib.contextmanager
def _without_progress_bars() -> Iterator[None]:
    """transformers' progress bars ("Loading weights: 100%|...") off while fuzzkv loads or saves a model: a run's
    output is its own lines, and no load of fuzzkv's is a wait worth a bar. Restored after, for the caller's loads."""
    shown = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            transformers.utils.logging.enable_progress_bar()


def load_model(name: str, *, scale: str, seed: int, init_std: float, attn: str, dtype: str = "float32",
               device: str = "cpu", copies: int = 1, trust_remote_code: bool = False,
               official_only: str = "") -> LoadedModel:
    """Resolve ``name`` as described in the module docstring, built or loaded in ``dtype`` on ``device`` (a
    factory's model as it comes). A full-size model first gets a memory plan (:func:`memory_needed`, for
    ``copies`` copies of its weights: one per backend of the run) and is refused when it cannot fit.
    ``trust_remote_code`` (``--trust-remote-code``): a folder's own model code may run. ``official_only``: why a
    backend of the run builds this architecture only from its official configs: a registry model is then its
    released config with only depth and vocabulary shrunk, whatever the scale (:func:`shrink.shallow_config`)."""
    with _without_progress_bars():
        return _resolve(name, scale=scale, seed=seed, init_std=init_std, attn=attn,
                        target=Target(dtype, device, copies, trust_remote_code, official_only))


def _resolve(name: str, *, scale: str, seed: int, init_std: float, attn: str, target: Target) -> LoadedModel:
    """:func:`load_model`'s resolution, form by form (the module docstring's order)."""
    if name.startswith(GIVEN):
        raise UsageError(f"the {name[len(GIVEN):]} model was an object handed to fuzzkv's Python API: no name rebuilds it.",
                         tip="hand fuzzkv.fuzz a module-level factory function instead, so replay can rebuild the model")
    if ":" in name and not Path(name).exists():
        return _from_factory(name)
    local = _local_weights(Path(name).expanduser())
    if local is not None:
        directory, gguf_file = local
        shipped = None if gguf_file else _folder_code(directory, name, target.trust_remote_code)
        _check_fits(_directory_config(directory, gguf_file), f"model in {name}", target)
        try:
            model = pretrained(directory, attn, gguf_file, target.dtype, target.device,
                               trust_remote_code=shipped is not None)
        except OSError as exc:
            raise UsageError(f"cannot load a model from {name}: {str(exc).splitlines()[0]}",
                             tip="fuzzkv loads safetensors or GGUF weights only (never pickles): re-save the model "
                                 "with save_pretrained(..., safe_serialization=True)") from None
        what = f"GGUF file {Path(directory) / gguf_file}" if gguf_file else f"local directory {name}"
        _check_shipped(model, shipped, name)
        return LoadedModel(model, f"weights from {what}{_OWN_CODE if shipped else ''}", tokenizer_from=directory,
                           gguf_file=gguf_file, trust_remote_code=shipped is not None)
    spec = registry.get(name)
    if spec is not None:
        return _from_registry(spec, scale=scale, seed=seed, init_std=init_std, attn=attn, target=target)
    model_type = generic_model_type(name)
    if model_type is not None:
        return _from_generic(model_type, scale=scale, seed=seed, init_std=init_std, attn=attn, target=target)
    try:
        model, own_code = _pretrained(name, attn, target)
        return LoadedModel(model, f"weights for {name} from the local HuggingFace cache{_OWN_CODE if own_code else ''}",
                           tokenizer_from=name, trust_remote_code=own_code)
    except OSError:
        if _looks_like_path(name):
            raise _nothing_at(name) from None
        # A registry name can be a model type too (llama, gpt2): each name once, the registry's first.
        close = list(dict.fromkeys([*registry.suggestions(name),
                                    *difflib.get_close_matches(name, hf_shrink.causal_lm_types(), n=3, cutoff=0.6)]))
        hint = (f"did you mean {', '.join(close)}?" if close
                else "run 'fuzzkv models' for the registry names, 'fuzzkv models --all' for every architecture")
        raise UsageError(f"unknown model {name!r}: not a registry name, a causal-LM model type of transformers "
                         f"{transformers.__version__}, a local directory, a module:factory, or a hub id in the local "
                         "HuggingFace cache.", tip=hint) from None


def _looks_like_path(name: str) -> bool:
    """Whether a ``--model`` value reads as a file system path rather than a name: it holds a path separator, starts
    with ``.`` or ``~``, or names a ``.gguf`` file. (A hub id, ``org/name``, holds one too: it is tried first.)"""
    separators = [separator for separator in ("/", os.sep, os.altsep) if separator]
    return any(separator in name for separator in separators) or name.startswith((".", "~")) or name.endswith(".gguf")


def _nothing_at(name: str) -> UsageError:
    """The error for a path-looking ``--model`` that no folder, GGUF file or cached hub id answers: "unknown model"
    would send the user looking for a name when the path is what is wrong."""
    path = Path(name).expanduser()
    if path.exists():  # a file, but not one a model loads from
        return UsageError(f"cannot load a model from {name}: not a folder or a .gguf file.",
                          tip="point --model at the folder save_pretrained wrote, or at a .gguf file")
    hub_id = re.fullmatch(r"\w[\w.-]*/\w[\w.-]*", name) is not None
    return UsageError(f"no such folder or file: {name}",
                      tip="nor is it a hub id in the local HuggingFace cache (fuzzkv never downloads)" if hub_id
                      else "check the path (a relative one starts from the current directory)")


# Declared dependencies (pyproject's [project] dependencies) that only a random-weight build imports, by import name:
# the requirement that installs each.
BUILD_DEPENDENCIES = {"accelerate": "accelerate>=0.26"}


@dataclass(frozen=True)
class Target:
    """Where and how a model is built: the run's dtype and device, and how many copies of its weights the run holds
    (one per backend)."""

    dtype: str = "float32"
    device: str = "cpu"
    copies: int = 1
    trust_remote_code: bool = False  # --trust-remote-code: a folder's own model code may run
    official_only: str = ""  # why a backend of the run builds the architecture only from its official configs


def _pretrained(path: str, attn: str, target: Target):
    """(the model of a hub id or path in the local HuggingFace cache, whether its own code built it), checked
    against memory first (its config.json only)."""
    shipped = _folder_code(path, path, target.trust_remote_code)
    # No config: not in the cache (the caller falls through) or unreadable (the load below says why).
    _check_fits(_directory_config(path, None), path, target)
    model = pretrained(path, attn, None, target.dtype, target.device, trust_remote_code=shipped is not None)
    _check_shipped(model, shipped, path)
    return model, shipped is not None


# The end of a model's source line when the code its folder ships built it.
_OWN_CODE = " with the folder's own code (--trust-remote-code)"
_TRUST_TIP = "pass --trust-remote-code to run the code shipped in the folder (it runs with your permissions)"


def _folder_code(path: str, name: str, trusted: bool) -> str | None:
    """The class to load by running the code the folder (or cached hub id) ships: the one its config.json's
    auto_map names for AutoModelForCausalLM, with ``trusted`` (--trust-remote-code). None: load it as the class of
    transformers its config names, running none of its code. Refuses (UsageError) a folder whose model is a class
    transformers does not define: loading it would load the stock class of its model type instead, a different
    model (its own code, its bugs, left out); where the folder ships that class's code, the tip is the flag."""
    config = folder_config(path)
    shipped = shipped_class(config)
    if trusted and shipped is not None:
        return shipped
    named, kind = declared_class(config)
    if named is not None and (kind is not None or hasattr(transformers, named)):
        # One of transformers' own (AutoModelForCausalLM loads a base model's head), as transformers itself loads a
        # folder naming one without trust_remote_code, code shipped or not.
        return None
    if shipped is not None:
        raise UsageError(f"the model in {name} is a {shipped}, a class defined by code the folder ships (its "
                         "config.json's auto_map): fuzzkv runs no code from a model folder unless asked.",
                         tip=_TRUST_TIP)
    if named is None:
        return None  # no class named: AutoModelForCausalLM decides by the model type, as transformers does
    assert config is not None
    stock = _stock_class(config.get("model_type"))
    how = (f"fuzz it with the module:factory form (--model my_module:make, with make() returning "
           f"{named}.from_pretrained({name!r}, local_files_only=True))")
    if "auto_map" in config:
        how += ("; the code it ships (auto_map) names no AutoModelForCausalLM class, so --trust-remote-code does "
                "not load it either")
    raise UsageError(f"the model in {name} is a {named} (its config.json's architectures), a class transformers "
                     f"{transformers.__version__} does not define: fuzzkv does not load it as "
                     f"{stock or 'another class'}; {how}.")


def _check_shipped(model: transformers.PreTrainedModel, shipped: str | None, name: str) -> None:
    """Refuse a model the folder's own code built as another class than its auto_map names (or as one of
    transformers' own): fuzzkv would fuzz a model the folder does not declare."""
    if shipped is None:
        return
    kind = type(model)
    if kind.__name__ != shipped or kind.__module__.startswith("transformers."):
        raise UsageError(f"the code the folder {name} ships built a {kind.__module__}.{kind.__qualname__}, not the "
                         f"{shipped} its config.json's auto_map names: fuzzkv does not fuzz it as that class.",
                         tip="check the folder's auto_map and the class its modeling file defines")


def _stock_class(model_type: object) -> str | None:
    """The causal-LM class transformers loads for ``model_type`` (what a custom class would be replaced by)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    stock = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    return stock if isinstance(stock, str) else None


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


GIVEN = "object "  # how a model object handed to the Python API is named: no import rebuilds it


def from_object(given: object) -> LoadedModel:
    """A model the Python API was handed and no import rebuilds: a built ``PreTrainedModel`` (used as it is, never
    re-initialised), or a zero-argument factory (a lambda, a closure) returning one."""
    model = given
    if not isinstance(model, transformers.PreTrainedModel):
        if not callable(given):
            raise UsageError(f"cannot fuzz a {type(given).__name__}: fuzzkv.fuzz takes a model name, a transformers "
                             "PreTrainedModel, or a zero-argument factory returning one.",
                             tip="e.g. fuzzkv.fuzz(AutoModelForCausalLM.from_config(config)) or fuzzkv.fuzz('llama')")
        try:
            model = given()
        except Exception as exc:  # noqa: BLE001 - user code: its failure is the user's to fix, said in one line
            raise UsageError(f"the model factory raised {type(exc).__name__}: {exc}",
                             tip="call the factory in Python to see the traceback") from None
        if not isinstance(model, transformers.PreTrainedModel):
            raise UsageError(f"the model factory returned {type(model).__name__}, not a transformers PreTrainedModel.",
                             tip="return a causal LM such as AutoModelForCausalLM.from_config(...)")
    return _given_instance(model)


def _given_instance(model: transformers.PreTrainedModel) -> LoadedModel:
    kind = type(model)
    return LoadedModel(model, f"{kind.__name__} object given to fuzzkv (its weights are used as they are)",
                       name=f"{GIVEN}{kind.__module__}.{kind.__qualname__}", given=True)


def saved_copy(loaded: LoadedModel) -> str:
    """Where a given model's copy lies (saved once with safetensors, on first use): what its scripts load."""
    if loaded.saved_to is None:
        import tempfile

        directory = tempfile.mkdtemp(prefix="fuzzkv-model-")
        with _without_progress_bars():
            loaded.model.save_pretrained(directory, safe_serialization=True)
        loaded.saved_to = directory
    return loaded.saved_to


def _from_registry(spec, *, scale, seed, init_std, attn, target) -> LoadedModel:
    if target.official_only:
        return _from_official(spec, seed=seed, init_std=init_std, attn=attn, target=target)
    if scale == "full":
        try:
            model, own_code = _pretrained(spec.hub_id, attn, target)
            return LoadedModel(model, f"real weights for {spec.hub_id} from the local HuggingFace cache"
                               f"{_OWN_CODE if own_code else ''}", spec=spec, tokenizer_from=spec.hub_id,
                               scaled=True, trust_remote_code=own_code)
        except OSError:
            pass  # not cached locally: fall through to random weights, and say so
    config = spec.config_for(scale)
    if scale == "full":
        _check_fits(config, f"full {spec.name}", target)
    return _random_twin(spec, config, f"no local weights for {spec.hub_id}: built the {scale} {spec.architecture}",
                        seed=seed, init_std=init_std, attn=attn, target=target, scaled=True)


def _from_official(spec, *, seed, init_std, attn, target) -> LoadedModel:
    """A registry model as its released config, with only its depth and vocabulary shrunk (seeded random weights),
    for a backend that builds the architecture only from its official configs."""
    config, shrunk = hf_shrink.shallow_config({"model_type": spec.model_type, **spec.config})
    _check_fits(config, f"{spec.name} with its released config", target)
    return _random_twin(spec, config, f"{spec.name}: {spec.hub_id}'s released config, kept but for {shrunk}, as "
                        f"{target.official_only},", seed=seed, init_std=init_std, attn=attn, target=target, scaled=False)


def _random_twin(spec, config: dict, what: str, *, seed, init_std, attn, target, scaled: bool) -> LoadedModel:
    """Registry model ``spec`` built from ``config`` with seeded random weights; ``what`` begins its source line."""
    model = build_random(config, seed=seed, init_std=init_std, attn=attn, dtype=target.dtype, device=target.device)
    source = f"{what} with seeded random weights (seed {seed}, init std {init_std})"
    return LoadedModel(model, source, spec=spec, random_weights=True, config_dict=config, seed=seed,
                       init_std=init_std, scaled=scaled)


def build_random(config: dict, *, seed: int, init_std: float, attn: str, dtype: str = "float32",
                 device: str = "cpu"):
    """The architecture of ``config`` with seeded random weights (see ``hf_paths.random_model``)."""
    try:
        return random_model(config, seed, init_std, attn, dtype, device)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in BUILD_DEPENDENCIES:
            raise
        # A broken install, not fuzzkv's bug: one line naming the fix.
        raise UsageError(f"the package {missing} is not installed, and fuzzkv builds models with random weights "
                         "with it (a dependency fuzzkv declares).",
                         tip=f"pip install '{BUILD_DEPENDENCIES[missing]}'") from None
    except ValueError as exc:
        if "model type" not in str(exc).lower() and "unrecognized" not in str(exc).lower():
            raise
        raise UsageError(f"transformers {transformers.__version__} does not know model type "
                         f"{config.get('model_type')!r}.", tip="upgrade transformers, or pick another model") from None


def generic_model_type(name: str) -> str | None:
    """The generative ``model_type`` ``name`` names, as a model type or a class name; None if neither."""
    types = hf_shrink.generative_types()
    if name in types:
        return name
    return next((t for t, classes in types.items() if any(cls == name for _, cls in classes)), None)


def _from_generic(model_type: str, *, scale, seed, init_std, attn, target) -> LoadedModel:
    kind, why = hf_shrink.kind(model_type)
    if not hf_shrink.fuzzed(model_type):
        raise NotFuzzable(f"{model_type} is not a language model fuzzkv drives yet ({kind}: {why}).",
                         tip="fuzzkv fuzzes decoder-only, text encoder-decoder and image-token vision-language "
                             "models; 'fuzzkv models --all' lists them")
    try:
        config = twins.tiny_config(model_type) if scale == "tiny" else hf_shrink.default_config(model_type)
    except hf_shrink.CannotBuild as exc:
        raise CannotBuildModel(f"cannot build a {scale} {model_type}: {exc}",
                               tip="report it; 'fuzzkv models --all' lists what builds") from None
    if scale == "full":
        _check_fits(config, f"full {model_type}", target)
    try:
        model = build_random(config, seed=seed, init_std=init_std, attn=attn, dtype=target.dtype,
                             device=target.device)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the config's own validation or construction failed: say so in one line
        first = (str(exc).splitlines() or [""])[0][:300]
        raise CannotBuildModel(f"cannot build a {scale} {model_type}: {type(exc).__name__}: {first}",
                               tip="try --scale tiny, or another --attn") from None
    source = (f"{model_type}: the {scale} twin of transformers' {hf_shrink.model_class(model_type)} defaults, "
              f"with seeded random weights (seed {seed}, init std {init_std})")
    return LoadedModel(model, source, random_weights=True, config_dict=config, seed=seed, init_std=init_std,
                       name=model_type, scaled=True)


# Activations, the interpreter, torch and the libraries: what a run holds beside weights (#16's budget).
ALLOWANCE_BYTES = int(1.5 * 2**30)


def memory_needed(config: dict, target: Target) -> dict[str, int]:
    """The bytes a run of ``config``'s model needs, by part: its weights in the run's dtype once per backend, what
    its precise twin holds (the parts outside the decoder layers, and one layer while it computes: see
    :mod:`fuzzkv.backends.precision`) and an allowance for activations. Counted on the meta device: nothing built."""
    model = _meta_model(config, target.dtype)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    own, layer = precision.weight_bytes(model, PRECISE[target.dtype])
    return {"weights": weights * target.copies, "precise": own + layer, "activations": ALLOWANCE_BYTES}


def _check_fits(config: dict | None, what: str, target: Target) -> None:
    """Refuse a model whose run cannot fit in the free memory of ``target.device``, before building anything."""
    if config is None or "model_type" not in config:
        return
    free = _free_memory(target.device)
    if free is None:
        return
    try:
        needed = memory_needed(config, target)
    except Exception:  # noqa: BLE001 - a config the meta build cannot read is refused (or not) by the real build
        return
    if sum(needed.values()) > free:
        parts = ", ".join(f"{part} {size / 2**30:.1f}" for part, size in needed.items())
        raise UsageError(f"the {what} in {target.dtype} needs about {sum(needed.values()) / 2**30:.1f} GiB "
                         f"({parts}), and {free / 2**30:.1f} GiB is free on {target.device}.",
                         tip="use --scale tiny, a half dtype (--dtype bfloat16), fewer backends, or a larger device")


def _free_memory(device: str) -> int | None:
    """Free bytes on ``device``: MemAvailable for the CPU, the CUDA driver's count for a GPU; None if unknown."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(torch.device(device))[0] if torch.cuda.is_available() else None
    return _available_memory()


def _directory_config(directory: str, gguf_file: str | None) -> dict | None:
    """The config.json of a local directory or a hub id in the local cache (None for a GGUF file, whose size is the
    file's own business, and where there is none or it is unreadable)."""
    if gguf_file:
        return None
    try:
        # Never the folder's code, even with --trust-remote-code: a config that needs it gets no memory plan (None).
        return transformers.AutoConfig.from_pretrained(directory, local_files_only=True,
                                                       trust_remote_code=False).to_dict()
    except (OSError, ValueError):
        return None


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
    return sum(p.numel() for p in _meta_model(config, "float32").parameters())


def _meta_model(config: dict, dtype: str):
    """``config``'s causal LM on the meta device, in ``dtype``: shapes and dtypes, no memory."""
    import torch

    config = dict(config)
    cfg = transformers.AutoConfig.for_model(config.pop("model_type"), **config)
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(cfg, **{dtype_keyword(): TORCH_DTYPES[dtype]})
