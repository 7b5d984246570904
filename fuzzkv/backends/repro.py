"""Standalone reproduction scripts, assembled from the very path code the backends run: what every library's
scripts share (each library's package assembles its own in its ``scripts`` module).

A script embeds the source of :mod:`~fuzzkv.backends.hf.paths` (and of the library's own path code), rebuilds
the model exactly as fuzzkv did (seeded random weights from the config, a local directory,
the local HF cache, or the user's factory; with the code the folder ships where the run was given
``--trust-remote-code``), runs the oracle's comparisons on the minimal
case, prints each largest logit difference, and exits 1 when one exceeds the tolerance (an
exception in a path ends it with that exception's traceback). It needs torch and the
libraries under test, never fuzzkv.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from fuzzkv.backends.hf import paths as hf_paths
from fuzzkv.models import loading as hf_loading

if TYPE_CHECKING:
    from fuzzkv.backends.interface import Backend, ModelInfo
    from fuzzkv.case import Case
    from fuzzkv.verdict import Bounds


# What a script needs of the backends it reproduces, as protocols: the backends import this module to build their
# scripts, and this module never imports them.
class HFSubject(Protocol):
    """The HF backend as a script rebuilds it: its model as loaded, placed and driven."""

    loaded: hf_loading.LoadedModel
    model: Any
    info: ModelInfo
    dtype: str
    device: str
    attn: str
    pad_id: int

    def generate_cache(self, case: Case) -> str | None: ...

    def attention_variants(self) -> dict[str, Backend]: ...


class ConvertedSubject(Protocol):
    """A backend converted from the HF model (TransformerLens, torchtune): the HF side it was built from."""

    @property
    def hf(self) -> HFSubject: ...

    @property
    def api(self) -> str: ...


REPORT = '''
FAILED = []


def report(label, reference_logits, candidate_logits, checked):
    worst = max_difference(reference_logits, candidate_logits, checked)
    rms = rms_difference(reference_logits, candidate_logits, checked)
    failed = worst > TOLERANCE or (RMS_TOLERANCE is not None and rms > RMS_TOLERANCE)
    print(f"{label}: max |logit difference| {worst:.6g} (tolerance {TOLERANCE:.6g}), rms {rms:.6g} "
          f"(tolerance {RMS_TOLERANCE}):", "FAILS" if failed else "passes")
    if failed:
        FAILED.append(label)


def teacher_forced(model, sequences, mask, prompt_length):
    """The uncached reference at the positions generate() produced logits for (a beam search's sequences attend to
    their rows' encoder inputs, for an encoder-decoder model)."""
    encoder = encoder_inputs(CASE, PAD, DEVICE, len(sequences) // len(CASE["prompts"]))
    return reference(model, sequences, mask, encoder)[:, prompt_length - 1:]


def uncached_alone(model, tokens, mask):
    """The uncached reference of each row alone (its real tokens, no padding), at the row's positions [B, T-1, V]."""
    rows = []
    for index, (row, real) in enumerate(zip(tokens, mask.bool())):
        alone = row[real].unsqueeze(0)
        encoder = encoder_inputs(dict(CASE, encoder=CASE.get("encoder", [])[index:index + 1]), PAD, DEVICE)
        logits = reference(model, alone, torch.ones_like(alone), encoder)[0]
        placed = torch.full((tokens.shape[1] - 1, logits.shape[-1]), float("nan"), dtype=logits.dtype,
                            device=logits.device)
        placed[real[:-1].nonzero().squeeze(-1)] = logits[:int(real[:-1].sum())]
        rows.append(placed)
    return torch.stack(rows)


def report_rows_alone(model, batched, tokens, mask, same_chunks=False):
    """Each row of the batch run alone, fed its tokens of the batch, vs its place in the batch (``same_chunks``:
    prefilled in the batch's chunks, for rows as long as the batch's)."""
    for row, prompt in enumerate(CASE["prompts"]):
        chunks = {} if same_chunks else {"prefill_chunks": [len(prompt)]}
        alone = dict(CASE, prompts=[prompt], continuation=[], encoder=CASE.get("encoder", [])[row:row + 1], **chunks)
        _, _, single = cached(model, alone, PAD, DEVICE, forced=tokens[row][mask[row].bool()].unsqueeze(0))
        where = mask[row, :-1].bool()
        n = int(where.sum())
        report(f"row {row} vs alone", batched[row][where].unsqueeze(0), single[:, :n],
               torch.ones(1, n, dtype=torch.bool))


def report_generated(label, sequences, mask, steps):
    """A path that chose its own tokens (generate() and its variants) vs one uncached forward over them."""
    ref = teacher_forced(subject, sequences, mask, max(len(p) for p in CASE["prompts"]))
    report(label, ref, torch.stack([s.float() for s in steps], 1), torch.ones(ref.shape[:2], dtype=torch.bool))
'''

ENDING = '''
raise SystemExit(1 if FAILED else 0)
'''


def embedded(module: ModuleType) -> str:
    """A path module's source, ready to paste into a script: its fuzzkv and __future__ imports dropped
    (what it imports from fuzzkv is embedded before it)."""
    lines = inspect.getsource(module).splitlines()
    kept = [line for line in lines if not line.startswith(("from __future__", "from fuzzkv.", "import fuzzkv"))]
    return "\n".join(kept).strip() + "\n"


def model_code(hf: HFSubject) -> str:
    """Python lines that rebuild ``hf``'s model as fuzzkv built it: in the run's dtype, on its device (a factory's
    model as the factory returns it, then placed like fuzzkv places it)."""
    loaded = hf.loaded
    if loaded.factory:
        module, attr = loaded.factory.split(":")
        switch = f"model.set_attn_implementation({hf.attn!r})\n" if loaded.attn_switched else ""
        return f"from {module} import {attr}\n\nmodel = {attr}()\n{switch}"
    if loaded.given:
        # No import rebuilds an object handed to the API: the script loads fuzzkv's saved copy of it, with its own
        # class where that class is importable (a subclass that plants a bug keeps it).
        kind = type(loaded.model)
        importable = kind.__module__ != "__main__" and "<" not in kind.__qualname__
        build = (f"from {kind.__module__} import {kind.__qualname__.split('.')[0]}\n\nmodel = {kind.__qualname__}"
                 if importable else "from transformers import AutoModelForCausalLM\n\nmodel = AutoModelForCausalLM")
        switch = f"model.set_attn_implementation({hf.attn!r})\n" if loaded.attn_switched else ""
        return f"{build}.from_pretrained({hf_loading.saved_copy(loaded)!r}, local_files_only=True)\n{switch}"
    if not loaded.random_weights or loaded.config_dict is None:
        path = loaded.tokenizer_from or hf.model.config.name_or_path
        if loaded.trust_remote_code:  # as the run loaded it (--trust-remote-code): the folder's own class
            return (f"# Runs the model code the folder ships (its config.json's auto_map), as the run did "
                    f"(--trust-remote-code).\nmodel = pretrained({path!r}, {hf.attn!r}, dtype={hf.dtype!r}, "
                    f"device={hf.device!r}, trust_remote_code=True)\n")
        return (f"model = pretrained({path!r}, {hf.attn!r}, gguf_file={loaded.gguf_file!r}, dtype={hf.dtype!r}, "
                f"device={hf.device!r})\n")
    config = json.dumps(loaded.config_dict, sort_keys=True)
    return (f"CONFIG = json.loads({config!r})\n"
            f"model = random_model(CONFIG, seed={loaded.seed}, init_std={loaded.init_std!r}, attn={hf.attn!r}, "
            f"dtype={hf.dtype!r}, device={hf.device!r})\n")


def assemble(hf: HFSubject, oracle: str, case: Case, bounds: Bounds, *, modules: tuple[ModuleType | str, ...],
             subject: str, body: str, libraries: str) -> str:
    """A whole script: header, embedded path code (a module's source, or lines given as a string), the model, the
    case, the subject, the body."""
    header = (f"# fuzzkv reproduction: oracle {oracle!r} on model {hf.info.name!r} ({libraries}).\n"
              f"# Runs fuzzkv's own path code (embedded below) on the minimal case; exits 1 when it fails.\n"
              "import json\n")
    setup = (f"DEVICE = {hf.device!r}\n"
             f"model = place(model, DEVICE, {case.dtype!r})\n"
             f"PAD = {hf.pad_id}\nTOLERANCE, RMS_TOLERANCE = {bounds.value!r}, {bounds.rms!r}\n"
             f"LOSS_TOLERANCE = {bounds.lossy!r}  # fuzzkv's calibrated bound of a lossy comparison (quantized)\n"
             f"GENERATE_CACHE = {hf.generate_cache(case)!r}\n"
             f"CASE = json.loads({case.to_json()!r})\n"
             f"{subject}\n")
    code = [m if isinstance(m, str) else embedded(m) for m in (hf_paths, *modules)]
    sections = [header, *code, REPORT.strip() + "\n", model_code(hf), setup,
                body.strip() + "\n", ENDING.strip()]
    return "\n\n".join(section.strip("\n") for section in sections) + "\n"


def filled(body: str, **values: Callable[[], str]) -> str:
    """An oracle's script body with its placeholders (``{name}``) filled: each value computed only where the body
    has its placeholder (the model's attention implementations cost a model copy each)."""
    for name, value in values.items():
        if "{" + name + "}" in body:
            body = body.replace("{" + name + "}", value())
    return body


