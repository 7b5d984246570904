"""torchtune's reproduction scripts: the HF model as fuzzkv built it, converted by torchtune's own builder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fuzzkv.backends.repro import ConvertedSubject, assemble, filled
from fuzzkv.backends.tune import paths as tt_paths

if TYPE_CHECKING:
    from fuzzkv.case import Case
    from fuzzkv.verdict import Bounds

# Embedded between hf_paths and tt_paths: the HF functions torchtune's path code replaces, under their own names.
KEEP_HF_PATHS = '''
# torchtune's path code below defines cached, reference, reused and generate again, for torchtune's model; the HF
# model's are kept here for the cross comparison.
hf_cached, hf_reference = cached, reference
'''


def tune_script(tune: ConvertedSubject, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers + torchtune: the HF model as fuzzkv built it, converted by torchtune's own builder and
    converter (transformers only builds the weights; every compared path is torchtune's, but for cross)."""
    body = filled(body, hf=lambda: "hf_", name=lambda: "torchtune")  # HF's own paths kept as hf_* (KEEP_HF_PATHS)
    return assemble(tune.hf, oracle, case, bounds, modules=(KEEP_HF_PATHS, tt_paths),
                    subject="subject = build_tune_model(model)", body=body,
                    libraries=f"torch + transformers + {tune.api}")
