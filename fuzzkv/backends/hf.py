"""The HuggingFace transformers backend: drives the model directly, not through generate.

The cached path prefills a cache object chunk by chunk, then decodes token by token,
collecting every step's logits. The reference is ONE teacher-forced forward pass over
the final sequence with no cache, which gives the uncached logits at every position.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

from fuzzkv.backends import hf_loading  # noqa: F401  (sets offline mode before transformers loads)

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import DynamicCache, StaticCache  # noqa: E402

from fuzzkv.backends import Backend, ModelInfo, Trace, generation_trace, prefill_and_decode  # noqa: E402
from fuzzkv.case import Case  # noqa: E402
from fuzzkv.errors import UsageError  # noqa: E402

# transformers 4.x: caches cannot be built from a config or reset, static caches need a batch
# size and explicit cache positions, and some models take only legacy tuples. fuzzkv drives
# the dynamic cache there, and leaves the static-cache and reuse oracles to 5.x.
MODERN = int(transformers.__version__.split(".")[0]) >= 5
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only real tokens, so padding never shifts a position."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class Batch:
    """A case's prompts padded into tensors, plus the mask of the whole final sequence."""

    ids: torch.Tensor  # [B, L]
    full_mask: torch.Tensor  # [B, L + max_new_tokens]; generated tokens are always real

    @property
    def prompt_length(self) -> int:
        return self.ids.shape[1]


class HFBackend(Backend):
    """Runs a ``transformers`` causal LM through cached, uncached and generate paths."""

    name = "hf"
    caches = ("dynamic", "static") if MODERN else ("dynamic",)
    features = frozenset({"static-cache", "cache-reset"} if MODERN else ())

    def __init__(self, loaded: "hf_loading.LoadedModel", *, dtype: str, device: str, attn: str):
        self.loaded = loaded
        self.model = loaded.model.to(device=device, dtype=TORCH_DTYPES[dtype]).eval()
        self.dtype, self.device, self.attn = dtype, device, attn
        self.pad_id = _pad_id(self.model.config)
        # MPT on transformers 4.x takes no position_ids (its ALiBi counts positions itself).
        self.takes_positions = "position_ids" in inspect.signature(self.model.forward).parameters
        self.info = _model_info(loaded, self.model.config)
        self._model64 = None
        # What the reproduction script needs to rebuild a random-weights model exactly.
        self.config_snapshot = _random_config(loaded)
        self.weights_seed, self.init_std = loaded.seed, loaded.init_std

    @classmethod
    def from_config(cls, config) -> "HFBackend":
        if config.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError(f"--device {config.device} requested but CUDA is not available.", tip="use --device cpu")
        try:
            loaded = hf_loading.load_model(config.model, scale=config.scale, seed=config.weights_seed,
                                           init_std=config.init_std, attn=config.attn)
        except (ValueError, ImportError) as exc:
            if "attn" in str(exc) or "sdpa" in str(exc).lower() or "attention" in str(exc).lower():
                raise UsageError(f"{config.model} does not support --attn {config.attn}.",
                                 tip="use --attn eager") from None
            raise
        if loaded.factory and config.attn:
            _set_attention(loaded.model, config.attn, config.model)
        return cls(loaded, dtype=config.dtype, device=config.device, attn=config.attn)

    # -- batches -----------------------------------------------------------------------
    def pad_batch(self, case: Case) -> Batch:
        """The case's prompts padded into tensors (shared with the TransformerLens backends)."""
        length = case.padded_length
        ids = torch.full((case.batch_size, length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((case.batch_size, case.total_length), dtype=torch.long)
        for row, prompt in enumerate(case.prompts):
            start = length - len(prompt) if case.padding_side == "left" else 0
            ids[row, start:start + len(prompt)] = torch.tensor(prompt)
            mask[row, start:start + len(prompt)] = 1
        mask[:, length:] = 1
        return Batch(ids.to(self.device), mask.to(self.device))

    def _new_cache(self, kind: str, max_len: int):
        if kind == "static":
            return StaticCache(config=self.model.config, max_cache_len=max_len)
        if MODERN:
            return DynamicCache(config=self.model.config)
        # transformers 4.x: a DynamicCache where the model takes one, else legacy tuples (None to start).
        return DynamicCache() if getattr(self.model, "_supports_cache_class", False) else None

    # -- paths -------------------------------------------------------------------------
    @torch.inference_mode()
    def cached(self, case, tokens=None, *, cache=None, chunks=None) -> Trace:
        kind = cache or case.cache
        store = self._new_cache(kind, case.total_length)
        return self._prefill_and_decode(case, store, kind, tokens, chunks or case.prefill_chunks)

    @torch.inference_mode()
    def reused(self, case, tokens) -> Trace:
        store = self._new_cache(case.cache, case.total_length)
        rows = [case.prompts[i % case.batch_size] for i in range(max(case.reuse_batch, case.batch_size))]
        primer = Case(prompts=tuple(rows), padding_side=case.padding_side, max_new_tokens=case.max_new_tokens,
                      cache=case.cache, dtype=case.dtype)
        self._prefill_and_decode(primer, store, case.cache, None, primer.prefill_chunks)
        store.reset()  # the contract under test: a reset cache behaves like a fresh one
        return self._prefill_and_decode(case, store, case.cache, tokens, case.prefill_chunks)

    def _prefill_and_decode(self, case, store, kind, forced, chunks) -> Trace:
        batch = self.pad_batch(case)
        run = _CachedForward(self, batch, store, case.total_length if kind == "static" else None)
        return prefill_and_decode(batch.ids, batch.full_mask, chunks, forced, run)

    @torch.inference_mode()
    def cache_contents(self, case, tokens):
        """For diagnosis: per layer, the keys and values a cache holds after the case's incremental
        path, beside those one pass over the same tokens writes. Yields (layer, part, incremental, one pass)."""
        if not MODERN:
            return
        caches = [self._new_cache(case.cache, case.total_length) for _ in range(2)]
        self._prefill_and_decode(case, caches[0], case.cache, tokens, case.prefill_chunks)
        batch = self.pad_batch(case)
        static_len = case.total_length if case.cache == "static" else None
        _CachedForward(self, batch, caches[1], static_len)(tokens.to(self.device), 0, tokens.shape[1] - 1)
        for i, (incremental, one_pass) in enumerate(zip(caches[0].layers, caches[1].layers)):
            for part in ("keys", "values"):
                yield i, part, getattr(incremental, part), getattr(one_pass, part)

    @torch.inference_mode()
    def reference(self, tokens, attention_mask, *, float64=False):
        model = self._float64_model() if float64 else self.model
        inputs = tokens[:, :-1].to(self.device)
        mask = attention_mask[:, :-1].to(self.device)
        out = model(input_ids=inputs, attention_mask=mask, use_cache=False,
                    **self.position_kwargs(positions_from_mask(mask)))
        return out.logits.double() if float64 else out.logits.float()

    def position_kwargs(self, position_ids) -> dict:
        return {"position_ids": position_ids} if self.takes_positions else {}

    def _float64_model(self):
        if self._model64 is None:
            self._model64 = copy.deepcopy(self.model).to(torch.float64)
        return self._model64

    def release_float64(self) -> None:
        """Free the float64 twin used for calibration."""
        self._model64 = None

    @torch.inference_mode()
    def generate(self, case) -> Trace:
        batch = self.pad_batch(case)
        mask = batch.full_mask[:, :batch.prompt_length]
        n = case.max_new_tokens
        out = self.model.generate(
            input_ids=batch.ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n, do_sample=False,
            num_beams=1, output_logits=True, return_dict_in_generate=True,
            **({"cache_implementation": case.cache} if MODERN else {}),
            pad_token_id=self.pad_id)
        return generation_trace(out.sequences, batch.full_mask, out.logits, batch.prompt_length)

    def texts(self, prompts) -> list[str] | None:
        """The prompts as text, where a tokenizer was saved beside the weights (None otherwise)."""
        if not hasattr(self, "_tokenizer"):
            self._tokenizer = hf_loading.load_tokenizer(self.loaded.tokenizer_from)
        if self._tokenizer is None:
            return None
        return [self._tokenizer.decode(list(prompt)) for prompt in prompts]

    def reproduction(self, oracle, case, tolerance) -> str:
        from fuzzkv.backends.hf_repro import script

        return script(self, oracle, case, tolerance)


class _CachedForward:
    """One cached forward over ``tokens[:, start:start+size]``: the step the cached path repeats."""

    def __init__(self, backend: HFBackend, batch: Batch, cache, static_len: int | None):
        self.backend, self.batch, self.cache, self.static_len = backend, batch, cache, static_len
        self.positions = positions_from_mask(batch.full_mask)

    def __call__(self, tokens, start, size):
        end = start + size
        attention = self.batch.full_mask[:, :end]
        if self.static_len is not None:
            # ALiBi models (bloom, falcon) need the 2-D mask as long as the static cache.
            attention = torch.nn.functional.pad(attention, (0, self.static_len - end))
        out = self.backend.model(input_ids=tokens[:, start:end], attention_mask=attention,
                                 past_key_values=self.cache, use_cache=True,
                                 **self.backend.position_kwargs(self.positions[:, start:end]))
        self.cache = out.past_key_values  # the same object in 5.x; new legacy tuples in some 4.x models
        return out.logits


def _set_attention(model, attn: str, name: str) -> None:
    try:
        model.set_attn_implementation(attn)
    except (ValueError, ImportError, AttributeError):
        raise UsageError(f"{name} does not support --attn {attn}.", tip="use --attn eager") from None


def _random_config(loaded) -> dict | None:
    if loaded.spec is None or not loaded.random_weights:
        return None
    return loaded.config_dict


def _pad_id(config) -> int:
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(config, key, None)
        value = value[0] if isinstance(value, (list, tuple)) and value else value
        if isinstance(value, int) and 0 <= value < config.vocab_size:
            return value
    return 0


def _model_info(loaded, config) -> ModelInfo:
    text = config.get_text_config()
    vocab = text.vocab_size
    specials = []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(text, key, None)
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and 0 <= v < vocab and v not in specials:
                specials.append(v)
    max_positions = next((getattr(text, k) for k in ("max_position_embeddings", "n_positions", "max_seq_len")
                          if isinstance(getattr(text, k, None), int)), None)
    if getattr(text, "alibi", False) or text.model_type == "bloom":
        max_positions = None  # ALiBi has no learned table to run past
    window = getattr(text, "sliding_window", None)
    windows = (window,) if isinstance(window, int) and window > 0 else ()
    name = loaded.spec.name if loaded.spec else (loaded.factory or config.name_or_path or text.model_type)
    return ModelInfo(name=name, architecture=(config.architectures or [type(loaded.model).__name__])[0],
                     vocab_size=vocab, special_ids=tuple(specials), max_positions=max_positions,
                     sliding_windows=windows, source=loaded.source)
