"""The HuggingFace transformers backend: drives the model directly, not through generate.

The cached path prefills a cache object chunk by chunk, then decodes token by token,
collecting every step's logits. The reference is ONE teacher-forced forward pass over
the final sequence with no cache, which gives the uncached logits at every position.
The path code itself lives in :mod:`fuzzkv.backends.hf.paths`, shared with the scripts.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch  # noqa: E402
import transformers  # noqa: E402

from fuzzkv.backends import precision  # noqa: E402
from fuzzkv.backends.driven import DrivenBackend  # noqa: E402
from fuzzkv.backends.hf import paths as hf_paths  # noqa: E402
from fuzzkv.backends.hf.scripts import hf_script
from fuzzkv.backends.interface import (  # noqa: E402
    Backend,
    CacheContents,
    Capabilities,
    ModelInfo,
    ModelRequest,
    Refused,
    Trace,
)
from fuzzkv.case import Case  # noqa: E402
from fuzzkv.errors import UsageError  # noqa: E402
from fuzzkv.features import (  # noqa: E402
    ASSISTED_DECODING,
    ATTENTION_IMPLEMENTATIONS,
    BEAM_SEARCH,
    CACHE_CONTENTS,
    CACHE_OPERATIONS,
    CACHE_RESET,
    COMPILED_DECODING,
    CONTINUOUS_BATCHING,
    OFFLOADED_CACHE,
    PADDED_POSITIONS,
    QUANTIZED_CACHE,
    STATIC_CACHE,
)
from fuzzkv.models import loading as hf_loading  # noqa: E402
from fuzzkv.verdict import Bounds  # noqa: E402

# What fuzzkv drives on each transformers release, newest first: (the first release, capabilities there).
# From 4.56 caches are built from a config as lists of layers (StaticCache sized by max_cache_len alone, reset(),
# keys and values per layer): the static-cache, reuse and contents oracles run there. Before 4.56 a StaticCache is
# allocated for a batch size and given explicit cache positions (hf_paths does both), a model class declares
# whether it takes one, and only the static classes have reset(): the static-cache oracles run there, cache-reuse
# on the static cache only. The cache surfaces of the other oracles (operations, offloading, quantized, continuous
# batching, ...) are driven on 5.x.
CACHE_CLASS_FEATURES = frozenset({STATIC_CACHE, CACHE_RESET, CACHE_CONTENTS, PADDED_POSITIONS})
TIERS: tuple[tuple[tuple[int, int], Capabilities], ...] = (
    ((5, 0), Capabilities(("dynamic", "static"), CACHE_CLASS_FEATURES | {
        BEAM_SEARCH, CACHE_OPERATIONS, CONTINUOUS_BATCHING, ASSISTED_DECODING, ATTENTION_IMPLEMENTATIONS,
        OFFLOADED_CACHE, QUANTIZED_CACHE, COMPILED_DECODING})),
    ((4, 56), Capabilities(("dynamic", "static"), CACHE_CLASS_FEATURES)),
    ((0, 0), Capabilities(("dynamic", "static"), frozenset({STATIC_CACHE, CACHE_RESET, PADDED_POSITIONS}),
                          reset_caches=("static",))),
)
MODERN = hf_paths.transformers_major() >= 5
CAPABILITIES = next(capabilities for first, capabilities in TIERS if hf_paths.transformers_release() >= first)


class HFBackend(DrivenBackend):
    """Runs a ``transformers`` causal LM through cached, uncached and generate paths."""

    name = "hf"
    capabilities = CAPABILITIES

    def __init__(self, loaded: hf_loading.LoadedModel, *, dtype: str, device: str, attn: str):
        self.loaded = loaded
        self.model = hf_paths.place(loaded.model, device, dtype)
        _placed_as_asked(self.model, dtype, device)
        self.dtype, self.device, self.attn = dtype, device, attn
        self.pad_id = _pad_id(self.model.config)
        self.info = _model_info(loaded, self.model.config)
        # attention implementation -> why switching this model to it does not take (the library's words)
        self.unswitchable: dict[str, str] = {}
        self.capabilities = _capabilities(self.model, self.unswitchable)
        self._tokenizer: Any = None
        self._tokenizer_loaded = False
        self._draft: tuple[Any, Any] | None = None  # (the model it drafts for, the draft)
        self._variants: tuple[Any, dict[str, Backend]] | None = None  # (the model they copy, attention -> view)

    @classmethod
    def from_request(cls, config: ModelRequest, given: object = None) -> HFBackend:
        """The model ``config`` names, or ``given`` (a model object or factory handed to the Python API)."""
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {config.device} requested but CUDA is not available.", tip="use --device cpu")
        if given is not None:
            loaded = hf_loading.from_object(given)
        else:
            loaded = cls._load(config)
        if (loaded.factory or loaded.given) and config.attn:
            loaded.attn_switched = _set_attention(loaded.model, config.attn, loaded.factory or config.model)
        return cls(loaded, dtype=config.dtype, device=config.device, attn=config.attn)

    @staticmethod
    def _load(config: ModelRequest) -> hf_loading.LoadedModel:
        try:
            return hf_loading.load_model(config.model, scale=config.scale, seed=config.weights_seed,
                                           init_std=config.init_std, attn=config.attn, dtype=config.dtype,
                                           device=config.device, copies=config.copies,
                                           trust_remote_code=config.trust_remote_code,
                                           official_only=config.official_only)
        except (ValueError, ImportError) as exc:
            if "attn" in str(exc) or "sdpa" in str(exc).lower() or "attention" in str(exc).lower():
                raise UsageError(f"{config.model} does not support --attn {config.attn}.",
                                 tip="use --attn eager") from None
            raise

    def padded(self, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
        """The case's prompts padded into ids [B, L] and the final sequence's mask [B, T] (shared with TL)."""
        return hf_paths.padded(case.to_dict(), self.pad_id, self.device)

    # -- paths (cached and reference: DrivenBackend) -------------------------------------
    def reused(self, case: Case, tokens: torch.Tensor) -> Trace:
        sequence, mask, logits = hf_paths.reused(self.model, case.to_dict(), self.pad_id, self.device, tokens)
        return Trace.everywhere(sequence, mask, logits, self.encoder_of(case))

    @torch.inference_mode()
    def cache_contents(self, case: Case, tokens: torch.Tensor) -> CacheContents:
        data, total = case.to_dict(), case.total_length
        caches = [hf_paths.new_cache(self.model, case.cache, total) for _ in range(2)]
        hf_paths.cached(self.model, data, self.pad_id, self.device, forced=tokens, cache=caches[0])
        _, mask = self.padded(case)
        one_pass = hf_paths.CachedForward(self.model, mask, caches[1], total if case.cache == "static" else None)
        one_pass(tokens.to(self.device), 0, tokens.shape[1] - 1)
        for i, (incremental, whole) in enumerate(zip(caches[0].layers, caches[1].layers)):
            yield i, "keys", incremental.keys, whole.keys
            yield i, "values", incremental.values, whole.values

    def precise_twin(self, dtype: torch.dtype, attn: str | None = None) -> torch.nn.Module | None:
        twin = precision.twin(self.model, dtype)
        if dtype == torch.float64 and MODERN:
            # transformers' default MoE expert kernel (grouped_mm) has no float64 version; the eager loop
            # computes the same function. (transformers before ~5.20 has one expert path only.)
            try:
                twin.set_experts_implementation("eager")
            except (AttributeError, ValueError):
                pass
        if attn is not None and attn != self.attn:
            if not MODERN:
                return None
            try:
                why = switch_attention(twin, attn)
            except (ValueError, ImportError, AttributeError):
                return None
            if why is not None:  # the library ignored the switch: this twin runs the run's own kernel
                self.unswitchable[attn] = why
                return None
        return twin

    def _generated(self, case: Case, path: Callable[..., Any], *settings: Any) -> Trace:
        """A generate()-family ``path`` of the path code on ``case`` (its ``settings`` after the device), with the
        library's documented refusals as refused cases."""
        with _documented_refusals():
            sequences, mask, steps = path(self.model, case.to_dict(), self.pad_id, self.device, *settings)
        # a beam search returns several sequences per row, each attending to its row's encoder inputs
        return Trace.generated(sequences, mask, steps, case.padded_length,
                               self.encoder_of(case, len(sequences) // case.batch_size))

    def generate(self, case: Case) -> Trace:
        return self._generated(case, hf_paths.generate, self.generate_cache(case))

    def compiled(self, case: Case) -> Trace:
        return self._generated(case, hf_paths.compiled_generate)

    def beam(self, case: Case) -> Trace:
        return self._generated(case, hf_paths.beam_search, self.generate_cache(case))

    def assisted(self, case: Case) -> Trace:
        if self._draft is None or self._draft[0] is not self.model:  # one draft per model (a precise view has its own)
            self._draft = (self.model, hf_paths.draft_model(self.model))
        return self._generated(case, hf_paths.assisted, self._draft[1], self.generate_cache(case))

    def attention_variants(self) -> dict[str, Backend]:
        if self._variants is None or self._variants[0] is not self.model:  # a precise view makes its own
            views: dict[str, Backend] = {}
            for attn in _attentions(self.model, self.device):
                if attn != self.attn and attn not in self.unswitchable:
                    twin = self.precise_twin(self.model.dtype, attn)  # the same dtype: only the kernel differs
                    if twin is not None:
                        views[attn] = self._view(twin)
            self._variants = (self.model, views)
        return self._variants[1]

    def prefix_reused(self, case: Case, tokens: torch.Tensor, operation: str) -> Trace:
        return Trace.everywhere(*hf_paths.prefix_reused(self.model, case.to_dict(), self.pad_id, self.device, tokens,
                                                        operation))

    def continuous_batched(self, case: Case) -> Trace:
        tokens, mask, logprobs = hf_paths.continuous_batching(self.model, case.to_dict(), self.pad_id, self.device)
        steps = list(logprobs.unsqueeze(-1).unbind(1))  # one "logit" per position: the generated token's log-prob
        return Trace.generated(tokens, mask, steps, case.padded_length)

    def generate_cache(self, case: Case) -> str | None:
        """The ``cache_implementation`` generate() is given: the one the case drew, where it drew one (None for
        "default"); else the case's cache on 5.x, and generate()'s own default on 4.x."""
        drawn = dict(case.settings).get("cache_implementation")
        if drawn is not None:
            return None if drawn == DEFAULT_IMPLEMENTATION else str(drawn)
        return case.cache if MODERN else None

    def module(self) -> torch.nn.Module:
        return self.model

    def texts(self, prompts: tuple[tuple[int, ...], ...]) -> list[str] | None:
        if not self._tokenizer_loaded:
            self._tokenizer, self._tokenizer_loaded = hf_loading.load_tokenizer(self.loaded.tokenizer_from,
                                                                                  self.loaded.gguf_file), True
        if self._tokenizer is None:
            return None
        return [self._tokenizer.decode(list(prompt)) for prompt in prompts]

    def reproduction(self, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
        return hf_script(self, oracle, body, case, bounds)


# The errors transformers raises on purpose to refuse a combination it does not support, with where it says so:
# a case that meets one is not applicable (Refused), not a finding. An error that is not here stays a finding.
REFUSALS: tuple[tuple[type[Exception], str, str], ...] = (
    (ValueError, "Assisted decoding requires a cache that can be cropped",
     "generation/utils.py:4098 (5.24): checked after the prefill, when each layer knows whether it can crop "
     "(a sliding window already slid, a recurrent state)"),
)


@contextmanager
def _documented_refusals() -> Iterator[None]:
    """The library's documented refusals, and a setting it took without applying it (the case did not run what it
    drew: not tested, never a pass), as :class:`Refused`: the search discards the case."""
    try:
        yield
    except hf_paths.SettingIgnored as exc:
        raise Refused(str(exc)) from exc
    except Exception as exc:
        if any(isinstance(exc, kind) and str(exc).startswith(text) for kind, text, _ in REFUSALS):
            raise Refused(str(exc)) from exc
        raise


def _set_attention(model: Any, attn: str, name: str) -> bool:
    """Switch a factory's model to ``attn``; False where this transformers cannot switch a built model (4.x
    chooses attention modules at construction, and a config edit would desynchronise mask and attention). A switch
    the library ignores (it logs a warning and changes nothing) is refused: the run would not run ``attn``."""
    if not hf_paths.transformers_major() >= 5:
        return False
    try:
        why = switch_attention(model, attn)
    except (ValueError, ImportError, AttributeError):
        raise UsageError(f"{name} does not support --attn {attn}.", tip="use --attn eager") from None
    if why is not None:
        own = getattr(model.config, "_attn_implementation", None)
        raise UsageError(f"{name} does not support --attn {attn}: {why}",
                         tip=f"use --attn {own}" if isinstance(own, str) else "build the model with it")
    return True


@contextmanager
def _library_words() -> Iterator[list[str]]:
    """What transformers logs (warnings and worse, whatever the run's verbosity) and what Python warnings are
    raised while the block runs, kept in order and not printed."""
    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    root = logging.getLogger("transformers")
    handlers, level = root.handlers[:], root.level
    root.handlers, root.level = [Keep(logging.WARNING)], logging.WARNING
    try:
        with warnings.catch_warnings(record=True) as raised:
            warnings.simplefilter("always")
            yield said
        said += [str(w.message) for w in raised]
    finally:
        root.handlers, root.level = handlers, level


def attention_in_effect(model: Any, attn: str) -> str | None:
    """None where every module of ``model`` that holds a config reads ``attn`` from it (the attention layers
    choose their kernel from ``config._attn_implementation`` at each call); else the first that does not, and what
    it reads."""
    for name, module in model.named_modules():
        implementation = getattr(getattr(module, "config", None), "_attn_implementation", None)
        if isinstance(implementation, str) and implementation != attn:
            return f"{name or type(model).__name__} still runs {implementation}"
    return None


def switch_attention(model: Any, attn: str) -> str | None:
    """Switch ``model`` to ``attn`` and read the switch back: None where it took, else why not, in the library's
    own words where it said any (transformers only logs a warning for a model it cannot switch after loading)."""
    with _library_words() as said:
        model.set_attn_implementation(attn)
    stale = attention_in_effect(model, attn)
    if stale is None:
        return None
    words = " ".join(dict.fromkeys(line.strip() for line in said if line.strip()))
    return f"set_attn_implementation({attn!r}) did not take ({stale})" + (f": transformers said: {words}" if words else "")


# The cache surfaces fuzzkv does not drive through an encoder-decoder model's decoder yet: their oracles are not
# applicable, with this reason (the core oracles, generate() and beam search are).
ENCODER_DECODER_UNDRIVEN_FEATURES = frozenset({CACHE_OPERATIONS, CONTINUOUS_BATCHING, ASSISTED_DECODING,
                                               ATTENTION_IMPLEMENTATIONS, OFFLOADED_CACHE, QUANTIZED_CACHE,
                                               COMPILED_DECODING, CACHE_CONTENTS})
ENCODER_DECODER_UNDRIVEN = "fuzzkv does not drive this cache surface through an encoder-decoder model's decoder yet"


# The cache surfaces fuzzkv does not drive with images yet (a cache operation's other rows, a paged request, a
# draft, a compiled or quantized cache): their oracles are not applicable to a vision-language model.
WITH_IMAGES_UNDRIVEN_FEATURES = frozenset({CACHE_OPERATIONS, CONTINUOUS_BATCHING, ASSISTED_DECODING,
                                           OFFLOADED_CACHE, QUANTIZED_CACHE, COMPILED_DECODING})
WITH_IMAGES_UNDRIVEN = "fuzzkv does not drive this cache surface with images yet"


def _capabilities(model: Any, unswitchable: dict[str, str]) -> Capabilities:
    """What fuzzkv can drive for this model: padded batches only where the model can take a padded row's real
    positions (``hf_paths.POSITIONS_FROM_CACHE_LENGTH``); the static cache only where transformers builds one
    for its config and the model's forward can use it (``hf_paths.NO_STATIC_CACHE``); key/value contents only
    where every cache layer holds keys and values (a recurrent or linear-attention state does not)."""
    absent: list[tuple[str, str]] = []
    if model.config.is_encoder_decoder:
        absent += [(feature, ENCODER_DECODER_UNDRIVEN) for feature in sorted(ENCODER_DECODER_UNDRIVEN_FEATURES)]
    if hf_paths.image_token(model) is not None:
        absent += [(feature, WITH_IMAGES_UNDRIVEN) for feature in sorted(WITH_IMAGES_UNDRIVEN_FEATURES)]
    positions_why = hf_paths.POSITIONS_FROM_CACHE_LENGTH.get(model.config.model_type)
    if positions_why:
        absent.append((PADDED_POSITIONS, positions_why))
    beam_why = hf_paths.NO_BEAM_SCORES.get(model.config.model_type)
    if beam_why:
        absent.append((BEAM_SEARCH, beam_why))
    absent += _absent_cache_class_features(model)
    if MODERN:
        absent += _absent_cache_surfaces(model, unswitchable)
    no_static = dict(absent).get(STATIC_CACHE)
    if no_static and CAPABILITIES.reset_caches == ("static",):  # before 4.56 only the static classes have reset()
        absent.append((CACHE_RESET, f"only the static cache has reset() on this release, and {no_static}"))
    absent = [(feature, why) for feature, why in absent if feature in CAPABILITIES.features]
    features = CAPABILITIES.features - {feature for feature, _ in absent}
    caches = tuple(c for c in CAPABILITIES.caches if c != "static" or STATIC_CACHE in features)
    quantizers = hf_paths.quantizers() if QUANTIZED_CACHE in features else ()
    generate_caches = (DEFAULT_IMPLEMENTATION, *(name for name in _cache_implementations()
                                                 if _implementation_why_not(model, name, no_static) is None))
    return Capabilities(caches, features, absent=tuple(absent), quantizers=quantizers,
                        generate_caches=generate_caches, reset_caches=CAPABILITIES.reset_caches)


# generate() without a cache_implementation: the library's own choice for the model.
DEFAULT_IMPLEMENTATION = "default"


def _cache_implementations() -> tuple[str, ...]:
    """The ``cache_implementation`` names the installed transformers lists (its own ALL_CACHE_IMPLEMENTATIONS)."""
    from transformers.generation import configuration_utils

    return tuple(dict.fromkeys(configuration_utils.ALL_CACHE_IMPLEMENTATIONS))  # 4.46 lists "static" twice


def _static_aliases() -> tuple[str, ...]:
    """The names the installed transformers builds a StaticCache for, its layers' kinds read from the config (4.56
    and later: "sliding_window", "hybrid", ... are deprecated aliases of "static"). Before, each named its own
    class, made for one kind of architecture."""
    from transformers.generation import configuration_utils

    return tuple(vars(configuration_utils).get("ALL_STATIC_CACHE_IMPLEMENTATIONS", ("static", "offloaded_static")))


def _implementation_why_not(model: Any, name: str, static_why: str | None) -> str | None:
    """Why generate() is not drawn with ``cache_implementation=name`` for ``model`` here; None: it is."""
    if name == "quantized":
        return "the quantized oracle draws it, with the cache_config knobs it needs"
    if "offloaded" in name and model.device.type != "cuda":
        return "an offloaded cache moves layers between the GPU and the CPU: CUDA only"
    if name in _static_aliases():
        return static_why
    if name in ("dynamic", "dynamic_full"):
        return None
    # transformers 4.x before 4.56: a class made for one architecture (SlidingWindowCache, HybridCache, MambaCache).
    # The model's own choice applies; SlidingWindowCache also to a model whose every layer slides (its config
    # declares a window and names no other cache: Gemma-2 names "hybrid", its layers alternate).
    declared = model.generation_config.cache_implementation
    window = getattr(model.config.get_text_config(), "sliding_window", None)  # a config key only where declared
    if name == declared or (name == "sliding_window" and declared is None and isinstance(window, int)
                            and static_why is None):
        return None
    return f"a cache for another kind of architecture (this model's config names {declared or 'none'})"


def _no_generate_static_cache(model: Any) -> str | None:
    """transformers 4.x: why generate() builds no static cache for this model. Before 4.56 a model class declares
    it (``_supports_static_cache``, which generate() checks); from 4.56 generate() builds one from the config as 5.x
    does, so the config's own answer decides."""
    if hf_paths.static_cache_sized_by_batch():
        return None if type(model)._supports_static_cache else (
            f"{type(model).__name__} declares no static cache (_supports_static_cache is False)")
    return hf_paths.NO_STATIC_CACHE.get(model.config.model_type) or _no_static_cache(model)


def _absent_cache_class_features(model: Any) -> list[tuple[str, str]]:
    """The cache-class features this model cannot have, each with why."""
    absent = []
    static_why = _no_generate_static_cache(model)
    if static_why:
        absent += [(STATIC_CACHE, static_why), (COMPILED_DECODING, f"compiled decoding needs a static cache: {static_why}")]
    if CACHE_CONTENTS not in CAPABILITIES.features:  # before 4.56: no cache layers to inspect
        return absent
    dynamic = hf_paths.new_cache(model, "dynamic", 8)
    state_layers = sorted({type(layer).__name__ for layer in dynamic.layers if not _holds_keys_and_values(type(layer))})
    if state_layers:
        absent.append((CACHE_CONTENTS, f"its cache holds states that are not key/value pairs ({', '.join(state_layers)})"))
    return absent


def _absent_cache_surfaces(model: Any, unswitchable: dict[str, str]) -> list[tuple[str, str]]:
    """The cache surfaces transformers 5.x cannot give this model, each with why. ``unswitchable`` gets each
    attention implementation the model declares but does not switch to (why, in the library's words)."""
    from transformers.generation.continuous_batching import ContinuousMixin  # 5.x (generate_batch's home)

    absent = []
    attentions = _attentions(model, str(model.device))
    if len(attentions) < 2:
        absent.append((ATTENTION_IMPLEMENTATIONS, f"{type(model).__name__} declares one attention implementation on "
                                                  f"{model.device.type} (eager)"))
    else:
        unswitchable.update(_unswitchable(model, attentions))
        own = getattr(model.config, "_attn_implementation", None)
        if all(attn == own or attn in unswitchable for attn in attentions):
            absent.append((ATTENTION_IMPLEMENTATIONS, f"{type(model).__name__} does not switch its attention "
                                                      f"implementation after loading: "
                                                      + "; ".join(unswitchable.values())))
    if model.device.type != "cuda":
        absent.append((OFFLOADED_CACHE, "an offloaded cache moves layers between the GPU and the CPU: CUDA only"))
    quantized_why = _no_quantized_cache(model)
    if quantized_why:
        absent.append((QUANTIZED_CACHE, quantized_why))
    if not isinstance(model, ContinuousMixin):
        absent.append((CONTINUOUS_BATCHING, f"{type(model).__name__} has no generate_batch (not a ContinuousMixin)"))
    return absent


# The attention implementations a model may declare (transformers' class flags), and the devices each runs on
# at a cost a fuzzing run can pay: flex_attention compiles a kernel per shape, 24 s a call on this CPU.
ATTENTIONS = (("eager", None, ("cpu", "cuda")), ("sdpa", "_supports_sdpa", ("cpu", "cuda")),
              ("flex_attention", "_supports_flex_attn", ("cuda",)))


def _unswitchable(model: Any, attentions: list[str]) -> dict[str, str]:
    """The implementations among ``attentions`` that ``model`` declares but does not switch to after loading,
    each with why: each is tried on the model itself (a config change), and the model's own restored after."""
    own = getattr(model.config, "_attn_implementation", None)
    if not isinstance(own, str):
        return {}
    refused: dict[str, str] = {}
    for attn in attentions:
        if attn == own:
            continue
        try:
            why = switch_attention(model, attn)
        except Exception:  # noqa: BLE001 - refused loudly: the variant's own build says so (precise_twin: None)
            continue
        finally:
            with _library_words():
                model.set_attn_implementation(own)
        if why is not None:
            refused[attn] = why
    return refused


def _attentions(model: Any, device: str) -> list[str]:
    """The attention implementations ``model`` declares that run on ``device``."""
    kind = torch.device(device).type
    return [name for name, flag, devices in ATTENTIONS
            if kind in devices and (flag is None or getattr(type(model), flag, False))]


def _no_static_cache(model: Any) -> str | None:
    """Why transformers builds no StaticCache for this model's config (its own answer), or None."""
    return _refuses_cache(model, "static", "StaticCache")


def _refuses_cache(model: Any, kind: str, name: str, settings: dict[str, Any] | None = None) -> str | None:
    """transformers' own answer to "can this config have a cache of ``kind``?": why not (its error), or None."""
    try:
        hf_paths.new_cache(model, kind, 8, settings)
    except Exception as exc:  # noqa: BLE001 - the library's refusal is the answer
        return (f"transformers builds no {name} for this config ({type(exc).__name__}: "
                f"{(str(exc).splitlines() or [''])[0][:160]})")
    return None


def _no_quantized_cache(model: Any) -> str | None:
    """Why this model gets no QuantizedCache here: no quantizer installed, or transformers' own refusal for its
    config (it documents the cache for models whose layers are all full attention)."""
    installed = hf_paths.quantizers()
    if not installed:
        return "no quantized-cache backend is installed (pip install 'fuzzkv[quantized]')"
    return _refuses_cache(model, "quantized", "QuantizedCache", {"quantizer": installed[0]})


def _holds_keys_and_values(layer: type) -> bool:
    # By class, not by attribute: a linear-attention layer derives from a key/value layer and keeps a
    # recurrent state beside it (transformers 5.24 names those classes LinearAttention*; older ones have none).
    return (issubclass(layer, transformers.cache_utils.DynamicLayer | transformers.cache_utils.StaticLayer)
            and not any("LinearAttention" in base.__name__ for base in layer.__mro__))


def _pad_id(config: Any) -> int:
    # A composite config (a vision-language model's) names its vocabulary in its text config only.
    text = config.get_text_config()
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(config, key, None)
        value = value[0] if isinstance(value, (list, tuple)) and value else value
        if isinstance(value, int) and 0 <= value < text.vocab_size:
            return value
    return 0


def _placed_as_asked(model: Any, dtype: str, device: str) -> None:
    """The dtype and device knobs prove they acted: the model runs in the dtype and on the device asked for (its
    main dtype, as transformers reports it: a module the library keeps in float32 by design does not count)."""
    ran = (str(model.dtype).removeprefix("torch."), model.device.type)
    if ran != (dtype, torch.device(device).type):
        raise UsageError(f"--dtype {dtype} --device {device} were asked for, and the model runs in {ran[0]} on {ran[1]}.",
                         tip="report it: fuzzkv placed the model and the library did not follow")


def _model_info(loaded: hf_loading.LoadedModel, config: Any) -> ModelInfo:
    text = config.get_text_config()
    vocab = text.vocab_size
    specials: list[int] = []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(text, key, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and 0 <= v < vocab and v not in specials:
                specials.append(v)
    max_positions = next((getattr(text, k) for k in ("max_position_embeddings", "n_positions", "max_seq_len")
                          if isinstance(getattr(text, k, None), int)), None)
    if getattr(text, "alibi", False) or text.model_type == "bloom":
        max_positions = None  # ALiBi has no learned table to run past
    if max_positions:  # an encoder's image run (Florence-2's) takes its positions before an encoder row's text
        max_positions -= hf_paths.encoder_image_positions(loaded.model)
    window = getattr(text, "sliding_window", None)
    windows = (window,) if isinstance(window, int) and window > 0 else ()
    name = loaded.spec.name if loaded.spec else (loaded.name or loaded.factory or config.name_or_path or text.model_type)
    return ModelInfo(name=name, architecture=(config.architectures or [type(loaded.model).__name__])[0],
                     vocab_size=vocab, special_ids=tuple(specials), max_positions=max_positions,
                     sliding_windows=windows, source=loaded.source, model_type=text.model_type,
                     head_dim=_head_dim(text), scaled=loaded.scaled, random_weights=loaded.random_weights,
                     encoder_decoder=bool(config.is_encoder_decoder), decoder_start_id=_decoder_start(loaded.model),
                     **_images(loaded.model))


def _images(model: Any) -> dict[str, Any]:
    """A vision-language model's image token and how many of them one image takes; an image encoder-decoder's
    encoder image token, as a marker; nothing for a text model."""
    image = hf_paths.image_token(model)
    if image is None:  # an encoder's image token (Florence-2's) is drawn in no text, as a marker is
        encoder = hf_paths.encoder_image_token(model)
        return {} if encoder is None else {"image_marker_ids": (encoder,)}
    opening, closing = hf_paths.image_edges(model)
    return {"image_token_id": image, "image_tokens": hf_paths.tokens_per_image(model), "image_open_id": opening,
            "image_close_id": closing, "image_marker_ids": hf_paths.image_markers(model)}


def _decoder_start(model: Any) -> int | None:
    """The token an encoder-decoder model's decoding starts from (generate() puts it first where a decoder prompt
    lacks it); None for a decoder-only model."""
    if not model.config.is_encoder_decoder:
        return None
    start = model.generation_config.decoder_start_token_id
    start = getattr(model.config, "decoder_start_token_id", None) if start is None else start  # LongT5 has none
    return start if isinstance(start, int) else None


def _head_dim(text: Any) -> int | None:
    """One attention head's width: the config's ``head_dim`` where it sets one, else hidden size / heads. A config
    whose layers differ (transformers 5.25's per-layer configs: Gemma 4's sliding and full layers) refuses a global
    value: the widest width every layer's heads divide into (their greatest common divisor)."""
    if getattr(text, "is_heterogeneous", False):  # transformers 5.25: layers of their own configs
        widths = [_head_dim(layer) for layer in text.per_layer_config]
        return math.gcd(*widths) if widths and all(isinstance(w, int) for w in widths) else None  # type: ignore[arg-type]
    explicit = getattr(text, "head_dim", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    hidden, heads = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 else None
