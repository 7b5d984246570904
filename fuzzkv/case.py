"""The `Case`: one fuzzed input, frozen and JSON-serialisable.

A case is what Hypothesis generates, what an oracle checks, what the store keeps and
what `replay` re-runs. It holds only plain values, so it can be printed, diffed and
pasted into a reproduction script.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

PADDING_SIDES = ("left", "right")
DRAWN_CACHES = ("dynamic", "static")  # what the core oracles draw
CACHES = (*DRAWN_CACHES, "quantized")  # "quantized": its knobs in ``settings``, drawn by its own oracle only
DTYPES = ("float32", "bfloat16", "float16")
# The setting saying how a padded case tells the model its padding, where a backend has a choice (its capabilities'
# padding_modes): an explicit attention mask, or the pad token the library infers padding from.
PADDING_MODE = "padding_mode"
EXPLICIT_PADDING, INFERRED_PADDING = "explicit", "inferred"


def wrapped_image(image: int, count: int, opening: int | None, closing: int | None) -> tuple[int, ...]:
    """One image's tokens in a prompt: ``count`` of ``image`` between its wrapping tokens (where a model has them)."""
    return (*(() if opening is None else (opening,)), *(image,) * count, *(() if closing is None else (closing,)))


@dataclass(frozen=True)
class Case:
    """One input to an oracle.

    prompts: token ids, one tuple per batch row; rows may differ in length (ragged),
        and are padded on ``padding_side`` to the longest.
    max_new_tokens: how many tokens greedy decoding produces (at least 1).
    prefill_chunks: sizes of the pieces the padded prompt is fed in; they sum to the
        padded prompt length. ``(L,)`` is a single prefill pass.
    cache: the cache implementation, ``"dynamic"``, ``"static"`` or ``"quantized"`` (its knobs in ``settings``).
    dtype: the floating-point type the model runs in.
    reuse_batch: for the ``cache-reuse`` oracle, the batch size the cache served
        before it was reset and reused for this case (0 when unused).
    continuation: the tokens fed after the prompt, one row each of ``max_new_tokens``
        tokens, one at a time through the cached path (teacher-forced decoding); empty:
        greedy decoding picks them. Random-weight models often decode one repeated token,
        so drawn continuations give the decode path variety; the property holds for any.
    settings: the knobs of the cache surface an oracle drives, drawn with the case and shrunk with
        it, as (name, value) pairs of JSON scalars: beam width, the cache operation a prefix goes
        through, a paged cache's page size and block count (empty for the core oracles).
    encoder: for an encoder-decoder model, the encoder's input ids, one tuple per batch row (rows may differ in
        length: padded on the right, as tokenizers pad them); ``prompts`` are then the decoder's prompts, all of
        one length (a decoder prompt is never padded, as generate() feeds them). Empty: a decoder-only case.
    """

    prompts: tuple[tuple[int, ...], ...]
    padding_side: str = "left"
    max_new_tokens: int = 1
    prefill_chunks: tuple[int, ...] = field(default=())
    cache: str = "dynamic"
    dtype: str = "float32"
    reuse_batch: int = 0
    continuation: tuple[tuple[int, ...], ...] = ()
    settings: tuple[tuple[str, Any], ...] = ()
    encoder: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        # Normalise lists to tuples so equal cases hash and compare equal.
        object.__setattr__(self, "prompts", tuple(tuple(int(t) for t in p) for p in self.prompts))
        object.__setattr__(self, "continuation", tuple(tuple(int(t) for t in row) for row in self.continuation))
        object.__setattr__(self, "encoder", tuple(tuple(int(t) for t in row) for row in self.encoder))
        items = self.settings.items() if isinstance(self.settings, dict) else self.settings
        object.__setattr__(self, "settings", tuple(sorted((str(k), v) for k, v in items)))
        chunks = tuple(int(c) for c in self.prefill_chunks) or (self.padded_length,)
        object.__setattr__(self, "prefill_chunks", chunks)
        self._validate()

    def _validate(self) -> None:
        if not self.prompts or any(len(p) == 0 for p in self.prompts):
            raise ValueError("a case needs at least one prompt, each of at least one token")
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"padding_side must be one of {PADDING_SIDES}")
        if self.cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if sum(self.prefill_chunks) != self.padded_length or min(self.prefill_chunks) < 1:
            raise ValueError("prefill_chunks must be positive sizes summing to the padded prompt length")
        if self.continuation and (len(self.continuation) != self.batch_size
                                  or any(len(row) != self.max_new_tokens for row in self.continuation)):
            raise ValueError("continuation must hold max_new_tokens tokens for each row (or be empty: greedy)")
        if any(not isinstance(v, (bool, int, float, str)) for _, v in self.settings):
            raise ValueError("settings must map names to JSON scalars")
        if self.encoder and (len(self.encoder) != self.batch_size or any(len(row) == 0 for row in self.encoder)):
            raise ValueError("encoder must hold one non-empty row of encoder ids per prompt (or be empty)")
        if self.encoder and self.padded:
            raise ValueError("an encoder-decoder case's decoder prompts must all be of one length")

    @property
    def batch_size(self) -> int:
        return len(self.prompts)

    @property
    def padded(self) -> bool:
        """Whether the prompts differ in length, so that some rows are padded."""
        return len({len(p) for p in self.prompts}) > 1

    @property
    def padded_length(self) -> int:
        return max(len(p) for p in self.prompts)

    @property
    def total_length(self) -> int:
        """Padded prompt plus generated tokens: the longest sequence a cache holds."""
        return self.padded_length + self.max_new_tokens

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["prompts"] = [list(p) for p in self.prompts]
        data["prefill_chunks"] = list(self.prefill_chunks)
        # Greedy cases keep the form (and so the fingerprints) they were stored with before continuations.
        if self.continuation:
            data["continuation"] = [list(row) for row in self.continuation]
        else:
            del data["continuation"]
        # Likewise a case without surface settings, or of a decoder-only model, keeps its stored form.
        if self.settings:
            data["settings"] = dict(self.settings)
        else:
            del data["settings"]
        if self.encoder:
            data["encoder"] = [list(row) for row in self.encoder]
        else:
            del data["encoder"]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """Rebuild a case; raises ``ValueError`` (or ``TypeError``) on malformed data."""
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @classmethod
    def from_json(cls, text: str) -> Case:
        return cls.from_dict(json.loads(text))

    def setting(self, name: str, default: Any = None) -> Any:
        """The surface setting ``name`` (see ``settings``), or ``default``."""
        return dict(self.settings).get(name, default)

    def rows(self, start: int, stop: int) -> Case:
        """The rows ``start`` to ``stop`` of this case alone (their prompts, encoder inputs and continuations),
        prefilled in one pass."""
        return replace(self, prompts=self.prompts[start:stop], encoder=self.encoder[start:stop],
                       continuation=self.continuation[start:stop], prefill_chunks=())

    def describe(self) -> str:
        """A short human summary, e.g. ``batch 3 (lengths 1,1,2), left-padded, 2 new tokens``."""
        lengths = ",".join(str(len(p)) for p in self.prompts)
        chunks = "one prefill pass" if len(self.prefill_chunks) == 1 else f"prefill chunks {list(self.prefill_chunks)}"
        reuse = f", cache reused after batch {self.reuse_batch}" if self.reuse_batch else ""
        fed = " (drawn, fed one at a time)" if self.continuation else ""
        knobs = "".join(f", {name} {value}" for name, value in self.settings)
        if self.encoder:
            encoded = ",".join(str(len(row)) for row in self.encoder)
            return (f"batch {self.batch_size} (encoder lengths {encoded}, decoder prompts of {self.padded_length}), "
                    f"{self.max_new_tokens} new token(s){fed}, {chunks}, {self.cache} cache, {self.dtype}{reuse}{knobs}")
        return (
            f"batch {self.batch_size} (lengths {lengths}), {self.padding_side}-padded, "
            f"{self.max_new_tokens} new token(s){fed}, {chunks}, {self.cache} cache, {self.dtype}{reuse}{knobs}"
        )
