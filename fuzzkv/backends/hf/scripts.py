"""transformers' reproduction scripts: torch and transformers only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.backends.repro import HFSubject, assemble, filled

if TYPE_CHECKING:
    from fuzzkv.case import Case
    from fuzzkv.verdict import Bounds


def hf_script(hf: HFSubject, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers only."""
    body = filled(body, attentions=lambda: repr(tuple(hf.attention_variants())))
    return assemble(hf, oracle, case, bounds, modules=(), subject="subject = decoder_view(model, CASE, PAD, DEVICE)", body=body,
                    libraries="torch + transformers only")
