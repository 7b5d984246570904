"""Canary mutants: planted cache bugs every run checks it can see (``fuzzkv.canaries`` runs them).

A :class:`Mutant` wraps the model the HF path code drives (an HF model, or a TransformerLens
adapter) and corrupts only the calls that read a non-empty cache, the way real cache bugs do.
The kinds are data: what each corrupts and the keyword it needs the model to take.
"""

from __future__ import annotations

import types
from typing import Any

from fuzzkv.backends.hf.paths import accepts, cache_keyword, returned_cache

# kind -> (what it plants, in words; the forward keyword it corrupts)
KINDS: dict[str, tuple[str, str]] = {
    "positions-off-by-one": ("cached steps use positions one too far (a RoPE/ALiBi offset bug)", "position_ids"),
    "cached-key-dropped": ("cached steps cannot attend to the first cached token", "attention_mask"),
    "row-mask-ignored": ("cached steps attend to padding (the padding mask is dropped)", "attention_mask"),
    "logit-offset-5pct": ("cached steps' logits move by 5% of the logit scale", "input_ids"),
}
OFFSET_FRACTION = 0.05  # the smallest bug, as a fraction of the logit scale, fuzzkv promises to see


def applies(kind: str, model: Any) -> bool:
    """Whether ``kind`` can be planted in ``model`` (it takes the keyword the kind corrupts)."""
    return accepts(model, KINDS[kind][1])


class Mutant:
    """``model`` with the planted bug ``kind`` on every call that reads a non-empty cache."""

    def __init__(self, model: Any, kind: str, logit_scale: float, offset_fraction: float = OFFSET_FRACTION):
        self.inner, self.kind, self.logit_scale, self.offset_fraction = model, kind, logit_scale, offset_fraction
        self.config, self.keyword = model.config, cache_keyword(model)
        self.with_positions = accepts(model, "position_ids")

    def forward(self, input_ids: Any, attention_mask: Any = None, position_ids: Any = None, cache: Any = None,
                use_cache: bool = True) -> Any:
        cached = use_cache and cache is not None and _length(cache) > 0
        if cached and self.kind == "positions-off-by-one" and position_ids is not None:
            position_ids = position_ids + 1
        if cached and self.kind == "cached-key-dropped" and attention_mask is not None:
            attention_mask = attention_mask.clone()
            attention_mask[:, 0] = 0
        if cached and self.kind == "row-mask-ignored" and attention_mask is not None:
            attention_mask = attention_mask.clone().fill_(1)
        extra = {"position_ids": position_ids} if self.with_positions else {}
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                         **{self.keyword: cache}, **extra)
        logits = out.logits + self.offset_fraction * self.logit_scale if cached and self.kind == "logit-offset-5pct" \
            else out.logits
        return types.SimpleNamespace(logits=logits, cache=returned_cache(out))

    __call__ = forward

    def over(self, inner: Any) -> Mutant:
        """The same planted bug over ``inner`` (the precise twin that tells a planted bug from rounding)."""
        return Mutant(inner, self.kind, self.logit_scale, self.offset_fraction)


def _length(cache: Any) -> int:
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    return int(cache[0].past_keys.shape[1])  # TransformerLens 2.x/3.x's key/value cache
