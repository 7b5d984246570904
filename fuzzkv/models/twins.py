"""The tiny twin of any generative model type fuzzkv fuzzes: :mod:`~fuzzkv.models.shrink`'s for a text model
(decoder-only or encoder-decoder), :mod:`~fuzzkv.models.vision`'s for a vision-language model (which shrinks its
text decoder with ``shrink``)."""

from __future__ import annotations

from fuzzkv.models import shrink, vision


def tiny_config(model_type: str) -> dict:
    """``model_type``'s proven tiny twin as a config.json dict; raises ``shrink.CannotBuild`` with why not."""
    if shrink.kind(model_type)[0] == "multimodal":
        return vision.proven_tiny_config(model_type)
    return shrink.tiny_config(model_type)
