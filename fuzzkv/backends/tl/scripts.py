"""TransformerLens' reproduction scripts: the HF model as fuzzkv built it, converted as fuzzkv converts it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fuzzkv.backends.repro import ConvertedSubject, assemble, filled
from fuzzkv.backends.tl import bridge_paths as tl_paths
from fuzzkv.backends.tl import hooked_paths as tl_legacy_paths
from fuzzkv.case import INFERRED_PADDING, PADDING_MODE

if TYPE_CHECKING:
    from fuzzkv.case import Case
    from fuzzkv.verdict import Bounds


class BridgeSubject(ConvertedSubject, Protocol):
    @property
    def architecture(self) -> str: ...


def tl_script(tl: BridgeSubject, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers + TransformerLens 4.x; the bridge is driven by the same HF path code."""
    subject = (f"bridge = build_bridge(model, {tl.architecture!r})\n"
               "subject = BridgeAsModel(bridge, model.config)")
    body = _tl_body(body, "bridge_generate(bridge, ids, mask[:, :ids.shape[1]], CASE['max_new_tokens'])")
    return assemble(tl.hf, oracle, case, bounds, modules=(tl_paths,), subject=subject, body=body,
                    libraries=f"torch + transformers + {tl.api}")


def legacy_tl_script(tl: ConvertedSubject, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers + TransformerLens 2.x/3.x; the HookedTransformer is built as fuzzkv builds it."""
    # The case's padding mode: with "inferred", TransformerLens infers padding from the pad token, in cached calls
    # and in generate on the padded batch whole (else generate runs each row alone, as fuzzkv does).
    inferred = case.setting(PADDING_MODE) == INFERRED_PADDING
    infer = ", infer_pad_id=PAD" if inferred else ""
    subject = f"hooked = build_hooked_transformer(model)\nsubject = HookedAsModel(hooked, model.config{infer})"
    generate = "hooked_generate_batch" if inferred else "hooked_generate_rows"
    body = _tl_body(body, f"{generate}(hooked, ids, mask, CASE['max_new_tokens'], PAD)")
    return assemble(tl.hf, oracle, case, bounds, modules=(tl_legacy_paths,), subject=subject, body=body,
                    libraries=f"torch + transformers + {tl.api}")


def _tl_body(body: str, generate_call: str) -> str:
    return filled(body, generate=lambda: generate_call, hf=lambda: "", name=lambda: "TransformerLens")
