"""Standalone reproduction scripts, assembled from the very path code the backends run.

A script embeds the source of :mod:`~fuzzkv.backends.hf_paths` (and, for TransformerLens,
of :mod:`~fuzzkv.backends.tl_paths` or :mod:`~fuzzkv.backends.tl_legacy_paths`), rebuilds
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
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from fuzzkv.backends import hf_loading, hf_paths, tl_legacy_paths, tl_paths, tt_paths
from fuzzkv.case import INFERRED_PADDING, PADDING_MODE
from fuzzkv.quantizers import exact_in_float64

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


class BridgeSubject(ConvertedSubject, Protocol):
    @property
    def architecture(self) -> str: ...

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
    """The uncached reference at the positions generate() produced logits for."""
    return reference(model, sequences, mask)[:, prompt_length - 1:]


def uncached_alone(model, tokens, mask):
    """The uncached reference of each row alone (its real tokens, no padding), at the row's positions [B, T-1, V]."""
    rows = []
    for row, real in zip(tokens, mask.bool()):
        alone = row[real].unsqueeze(0)
        logits = reference(model, alone, torch.ones_like(alone))[0]
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
        alone = dict(CASE, prompts=[prompt], continuation=[], **chunks)
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

# The cross oracle: HF's paths on the HF model (``{hf}``: the prefix of their names where another backend's path
# code replaced them), the other backend's on ``subject``.
CROSS = '''
tokens, mask, from_hf_cached = {hf}cached(model, CASE, PAD, DEVICE)
from_hf_uncached = {hf}reference(model, tokens, mask)
_, _, other_cached = cached(subject, CASE, PAD, DEVICE, forced=tokens)
other_uncached = reference(subject, tokens, mask)
report("uncached: {name} vs HF", from_hf_uncached, other_uncached, mask[:, :-1].bool())
report("cached: {name} vs HF", from_hf_cached, other_cached, mask[:, :-1].bool())
'''

# The oracles' comparisons, on ``subject`` (the model, or an adapter over a TransformerLens model).
BODIES = {
    "decode": '''
tokens, mask, got = cached(subject, CASE, PAD, DEVICE)
report("cached vs uncached", reference(subject, tokens, mask), got, mask[:, :-1].bool())
''',
    "chunked": '''
tokens, mask, whole = cached(subject, CASE, PAD, DEVICE, chunks=[max(len(p) for p in CASE["prompts"])])
_, _, chunked = cached(subject, CASE, PAD, DEVICE, forced=tokens)
report("chunked vs one pass", whole, chunked, mask[:, :-1].bool())
''',
    "cache-impl": '''
tokens, mask, dynamic = cached(subject, CASE, PAD, DEVICE, kind="dynamic")
_, _, static = cached(subject, CASE, PAD, DEVICE, kind="static", forced=tokens)
report("static vs dynamic", dynamic, static, mask[:, :-1].bool())
''',
    "offloaded": '''
tokens, mask, dynamic = cached(subject, CASE, PAD, DEVICE, kind="dynamic")
_, _, offloaded = cached(subject, CASE, PAD, DEVICE, kind="offloaded", forced=tokens)
report("offloaded vs dynamic", dynamic, offloaded, mask[:, :-1].bool())
''',
    "cache-reuse": '''
tokens, mask, fresh = cached(subject, CASE, PAD, DEVICE)
_, _, again = reused(subject, CASE, PAD, DEVICE, tokens)
report("reused vs fresh", fresh, again, mask[:, :-1].bool())
''',
    "batch": '''
tokens, mask, batched = cached(subject, CASE, PAD, DEVICE)
report_rows_alone(subject, batched, tokens, mask)
''',
    "generate": '''
sequences, mask, steps = generate(subject, CASE, PAD, DEVICE, GENERATE_CACHE)
report_generated("generate vs uncached", sequences, mask, steps)
''',
    "beam": '''
sequences, mask, steps = beam_search(subject, CASE, PAD, DEVICE, GENERATE_CACHE)
report_generated("beam search vs uncached", sequences, mask, steps)
''',
    "compiled": '''
sequences, mask, steps = compiled_generate(subject, CASE, PAD, DEVICE)
report_generated("compiled generate vs uncached", sequences, mask, steps)
''',
    "assisted": '''
sequences, mask, steps = assisted(subject, CASE, PAD, DEVICE, draft_model(subject), GENERATE_CACHE)
report_generated("assisted vs uncached", sequences, mask, steps)
''',
    "attn-impl": '''
tokens, mask, run_cached = cached(subject, CASE, PAD, DEVICE)
run_uncached = reference(subject, tokens, mask)
for attn in {attentions}:  # the model's other attention implementations, as fuzzkv ran them
    other = copy.deepcopy(subject)
    other.set_attn_implementation(attn)
    _, _, other_cached = cached(other, CASE, PAD, DEVICE, forced=tokens)
    report(f"cached: {attn} vs the run's", run_cached, other_cached, mask[:, :-1].bool())
    report(f"uncached: {attn} vs the run's", run_uncached, reference(other, tokens, mask), mask[:, :-1].bool())
''',
    "prefix-reuse": '''
if CASE["settings"]["operation"] == "chunked-generate":
    sequences, mask, steps = generate(subject, CASE, PAD, DEVICE, GENERATE_CACHE)
    report_generated("reused prefix vs fresh", sequences, mask, steps)
else:
    tokens, mask, fresh = cached(subject, CASE, PAD, DEVICE)
    _, _, resumed = prefix_reused(subject, CASE, PAD, DEVICE, tokens, CASE["settings"]["operation"])
    report("reused prefix vs fresh", fresh, resumed, mask[:, :-1].bool())
''',
    "quantized": '''
# A quantized cache (CASE["settings"]). Exact properties in float64 (float32 runs whose layout keeps each row's
# quantization groups inside the row; fuzzkv's ROW_MIXING lists those that do not): each row vs the row alone,
# and the drawn operation vs a fresh quantized cache. The loss against the unquantized cache is judged by the
# bound fuzzkv calibrated for these settings, where that comparison is the one that failed.
plain = dict(CASE, cache="dynamic", settings={})
tokens, mask, unquantized = cached(subject, plain, PAD, DEVICE)
_, _, quantized = cached(subject, CASE, PAD, DEVICE, forced=tokens)
checked = mask[:, :-1].bool()
loss = max_difference(unquantized, quantized, checked)
print(f"quantized vs unquantized: max |logit difference| {loss:.6g} (calibrated bound {LOSS_TOLERANCE})")
if LOSS_TOLERANCE is not None and loss > LOSS_TOLERANCE:
    FAILED.append("quantized vs unquantized")
exact = subject.to(torch.float64) if EXACT else subject
tokens, mask, fresh = cached(exact, CASE, PAD, DEVICE, forced=tokens)
if len(CASE["prompts"]) > 1:
    report_rows_alone(exact, fresh, tokens, mask, same_chunks=True)
operation = CASE["settings"]["operation"]
if operation == "generate":
    sequences, mask, steps = generate(exact, CASE, PAD, DEVICE, "quantized")
    _, _, fed = cached(exact, CASE, PAD, DEVICE, forced=sequences, chunks=[max(len(p) for p in CASE["prompts"])])
    start = max(len(p) for p in CASE["prompts"]) - 1
    report("generate() vs the cached path", fed[:, start:], torch.stack([s.float() for s in steps], 1).to(fed.dtype),
           torch.ones(fed[:, start:].shape[:2], dtype=torch.bool))
elif operation != "none":
    _, _, resumed = prefix_reused(exact, CASE, PAD, DEVICE, tokens, operation)
    report(f"prefix after {operation} vs fresh", fresh, resumed, mask[:, :-1].bool())
''',
    "continuous-batching": '''
tokens, mask, logprobs = continuous_batching(subject, CASE, PAD, DEVICE)
prompt_length = max(len(p) for p in CASE["prompts"])
uncached = teacher_forced(subject, tokens, mask, prompt_length).double().log_softmax(-1)
chosen = uncached.gather(-1, tokens[:, prompt_length:, None])
everywhere = torch.ones(chosen.shape[:2], dtype=torch.bool)
report("greedy token: best vs chosen (uncached log-probs)", uncached.amax(-1, keepdim=True), chosen, everywhere)
report("log-probs: continuous batching vs uncached", chosen, logprobs.unsqueeze(-1), everywhere)
''',
    "tl-decode": '''
tokens, mask, got = cached(subject, CASE, PAD, DEVICE)
report("forward with a cache vs uncached", reference(subject, tokens, mask), got, mask[:, :-1].bool())
ids, mask = padded(CASE, PAD, DEVICE)
sequences, steps = {generate}
if len({len(p) for p in CASE["prompts"]}) > 1:  # a padded batch: each prompt alone, uncached, is what it must equal
    ref, against = uncached_alone(subject, sequences, mask)[:, ids.shape[1] - 1:], "each prompt alone, uncached"
else:
    ref, against = teacher_forced(subject, sequences, mask, ids.shape[1]), "uncached"
report(f"generate(use_past_kv_cache=True) vs {against}", ref, torch.stack([s.float() for s in steps], 1),
       torch.ones(ref.shape[:2], dtype=torch.bool))
''',
    "cross": CROSS.replace("{hf}", "").replace("{name}", "TransformerLens"),

}
# Embedded between hf_paths and tt_paths: the HF functions torchtune's path code replaces, under their own names.
KEEP_HF_PATHS = '''
# torchtune's path code below defines cached, reference, reused and generate again, for torchtune's model; the HF
# model's are kept here for the cross comparison.
hf_cached, hf_reference = cached, reference
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


def hf_script(hf: HFSubject, oracle: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers only."""
    body = BODIES[oracle].replace("{attentions}", repr(tuple(hf.attention_variants())) if oracle == "attn-impl" else "")
    if oracle == "quantized":  # whether fuzzkv held its exact properties in float64 (see oracles/quantized.py)
        body = f"EXACT = {exact_in_float64(dict(case.settings), case.dtype)!r}\n{body}"
    return assemble(hf, oracle, case, bounds, modules=(), subject="subject = model", body=body,
                    libraries="torch + transformers only")


def tl_script(tl: BridgeSubject, oracle: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers + TransformerLens 4.x; the bridge is driven by the same HF path code."""
    subject = (f"bridge = build_bridge(model, {tl.architecture!r})\n"
               "subject = BridgeAsModel(bridge, model.config)")
    body = _tl_body(oracle, "bridge_generate(bridge, ids, mask[:, :ids.shape[1]], CASE['max_new_tokens'])")
    return assemble(tl.hf, oracle, case, bounds, modules=(tl_paths,), subject=subject, body=body,
                    libraries=f"torch + transformers + {tl.api}")


def legacy_tl_script(tl: ConvertedSubject, oracle: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers + TransformerLens 2.x/3.x; the HookedTransformer is built as fuzzkv builds it."""
    # The case's padding mode: with "inferred", TransformerLens infers padding from the pad token, in cached calls
    # and in generate on the padded batch whole (else generate runs each row alone, as fuzzkv does).
    inferred = case.setting(PADDING_MODE) == INFERRED_PADDING
    infer = ", infer_pad_id=PAD" if inferred else ""
    subject = f"hooked = build_hooked_transformer(model)\nsubject = HookedAsModel(hooked, model.config{infer})"
    generate = "hooked_generate_batch" if inferred else "hooked_generate_rows"
    body = _tl_body(oracle, f"{generate}(hooked, ids, mask, CASE['max_new_tokens'], PAD)")
    return assemble(tl.hf, oracle, case, bounds, modules=(tl_legacy_paths,), subject=subject, body=body,
                    libraries=f"torch + transformers + {tl.api}")


def tune_script(tune: ConvertedSubject, oracle: str, case: Case, bounds: Bounds) -> str:
    """torch + transformers + torchtune: the HF model as fuzzkv built it, converted by torchtune's own builder and
    converter (transformers only builds the weights; every compared path is torchtune's, but for cross)."""
    body = CROSS.replace("{hf}", "hf_").replace("{name}", "torchtune") if oracle == "cross" else BODIES[oracle]
    return assemble(tune.hf, oracle, case, bounds, modules=(KEEP_HF_PATHS, tt_paths),
                    subject="subject = build_tune_model(model)", body=body,
                    libraries=f"torch + transformers + {tune.api}")


def _tl_body(oracle: str, generate_call: str) -> str:
    return BODIES[oracle].replace("{generate}", generate_call)
