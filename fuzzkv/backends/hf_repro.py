"""Standalone reproduction scripts for HF-backend failures: torch and transformers only.

The script rebuilds the model exactly as fuzzkv did (bundled config with seeded random
weights, a local directory, the local HF cache, or the user's factory), runs the two
paths of the oracle on the minimal case, and prints the largest logit difference.
"""

from __future__ import annotations

import json
import textwrap

PATHS = '''
def positions(mask):
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def padded(case):
    L = max(len(p) for p in case["prompts"])
    ids = torch.full((len(case["prompts"]), L), PAD, dtype=torch.long)
    mask = torch.zeros((len(case["prompts"]), L + case["max_new_tokens"]), dtype=torch.long)
    for r, p in enumerate(case["prompts"]):
        s = L - len(p) if case["padding_side"] == "left" else 0
        ids[r, s:s + len(p)] = torch.tensor(p)
        mask[r, s:s + len(p)] = 1
    mask[:, L:] = 1
    return ids.to(DEVICE), mask.to(DEVICE)


def new_cache(kind, total):
    return StaticCache(config=model.config, max_cache_len=total) if kind == "static" else DynamicCache(config=model.config)


@torch.inference_mode()
def cached(case, kind, chunks, forced=None, cache=None):
    """Prefill in chunks, then greedy decode (or feed `forced`); logits at every position."""
    ids, mask = padded(case)
    L, total = ids.shape[1], mask.shape[1]
    pos = positions(mask)
    cache = cache if cache is not None else new_cache(kind, total)
    tokens = torch.cat([ids, torch.zeros_like(mask[:, L:])], 1) if forced is None else forced.clone()
    def step(start, size):
        am = mask[:, :start + size]
        if kind == "static":  # ALiBi models need the 2-D mask as long as the static cache
            am = torch.nn.functional.pad(am, (0, total - start - size))
        return model(input_ids=tokens[:, start:start + size], attention_mask=am,
                     position_ids=pos[:, start:start + size], past_key_values=cache, use_cache=True).logits
    out, start = [], 0
    for size in chunks:
        out.append(step(start, size))
        start += size
    for p in range(L, total):
        if forced is None:
            tokens[:, p] = out[-1][:, -1].argmax(-1)
        if p < total - 1:
            out.append(step(p, 1))
    return tokens, mask, torch.cat(out, 1).float()


@torch.inference_mode()
def reference(tokens, mask):
    """ONE teacher-forced forward pass, no cache."""
    m = mask[:, :-1]
    return model(input_ids=tokens[:, :-1], attention_mask=m, position_ids=positions(m), use_cache=False).logits.float()


def report(ref, got, checked):
    diff = (ref - got).abs().nan_to_num(nan=float("inf")).amax(-1).masked_fill(~checked, 0)
    print("max |logit difference|:", diff.max().item(), "tolerance:", TOLERANCE)
    print("FAILS" if diff.max().item() > TOLERANCE else "passes")
'''

ORACLE_BODIES = {
    "decode": '''
tokens, mask, got = cached(CASE, CASE["cache"], CASE["prefill_chunks"])
report(reference(tokens, mask), got, mask[:, :-1].bool())
''',
    "chunked": '''
L = max(len(p) for p in CASE["prompts"])
tokens, mask, whole = cached(CASE, CASE["cache"], [L])
_, _, chunked = cached(CASE, CASE["cache"], CASE["prefill_chunks"], forced=tokens)
report(whole, chunked, mask[:, :-1].bool())
''',
    "cache-impl": '''
tokens, mask, dynamic = cached(CASE, "dynamic", CASE["prefill_chunks"])
_, _, static = cached(CASE, "static", CASE["prefill_chunks"], forced=tokens)
report(dynamic, static, mask[:, :-1].bool())
''',
    "cache-reuse": '''
tokens, mask, fresh = cached(CASE, CASE["cache"], CASE["prefill_chunks"])
rows = [CASE["prompts"][i % len(CASE["prompts"])] for i in range(max(CASE["reuse_batch"], len(CASE["prompts"])))]
primer = dict(CASE, prompts=rows, prefill_chunks=[max(len(p) for p in rows)])
shared = new_cache(CASE["cache"], mask.shape[1])
cached(primer, CASE["cache"], primer["prefill_chunks"], cache=shared)
shared.reset()
_, _, reused = cached(CASE, CASE["cache"], CASE["prefill_chunks"], forced=tokens, cache=shared)
report(fresh, reused, mask[:, :-1].bool())
''',
    "batch": '''
tokens, mask, batched = cached(CASE, CASE["cache"], CASE["prefill_chunks"])
for r, prompt in enumerate(CASE["prompts"]):
    alone = dict(CASE, prompts=[prompt], prefill_chunks=[len(prompt)])
    keep = mask[r].bool()
    _, _, single = cached(alone, CASE["cache"], [len(prompt)], forced=tokens[r][keep].unsqueeze(0))
    where = mask[r, :-1].bool()
    print(f"row {r}:", end=" ")
    report(batched[r][where].unsqueeze(0), single[:, : int(where.sum())], torch.ones(1, int(where.sum()), dtype=torch.bool))
''',
    "generate": '''
ids, mask = padded(CASE)
n = CASE["max_new_tokens"]
with torch.inference_mode():
    out = model.generate(input_ids=ids, attention_mask=mask[:, :ids.shape[1]], max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, num_beams=1, cache_implementation=CASE["cache"], output_logits=True,
                         return_dict_in_generate=True, pad_token_id=PAD)
ref = reference(out.sequences, mask)[:, ids.shape[1] - 1:]
got = torch.stack([step.float() for step in out.logits], 1)
report(ref, got, torch.ones(ref.shape[:2], dtype=torch.bool))
''',
}


def model_code(backend) -> str:
    """Python lines that rebuild ``backend``'s model as fuzzkv built it."""
    loaded, config = backend.loaded, backend.config_snapshot
    if loaded.factory:
        module, attr = loaded.factory.split(":")
        return f"from {module} import {attr}\nmodel = {attr}()"
    if config is None:
        path = backend.model.config.name_or_path
        return f"model = AutoModelForCausalLM.from_pretrained({path!r}, local_files_only=True)"
    cfg = json.dumps(config, indent=1, sort_keys=True)
    return textwrap.dedent(f'''\
        CONFIG = json.loads({cfg!r})
        model_type = CONFIG.pop("model_type")
        cfg = AutoConfig.for_model(model_type, **CONFIG)
        cfg.use_cache = True
        torch.manual_seed({backend.weights_seed})
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation={backend.attn!r}, dtype=torch.float32)
        with torch.no_grad():  # fuzzkv's sensitive init: logits of scale ~5, not ~1
            for m in model.modules():
                if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)):
                    m.weight.normal_(0.0, {backend.init_std!r})''')


def script(backend, oracle: str, case, tolerance: float, *, body: str | None = None, library: str = "transformers") -> str:
    """A complete, copy-pasteable script reproducing ``oracle`` on ``case`` (``body`` replaces the oracle's code)."""
    header = textwrap.dedent(f'''\
        # fuzzkv reproduction: oracle {oracle!r} on model {backend.info.name!r} (torch + {library} only)
        import json
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, StaticCache
        ''')
    setup = textwrap.dedent(f'''\
        DEVICE, DTYPE = {backend.device!r}, torch.{case.dtype}
        model = model.to(device=DEVICE, dtype=DTYPE).eval()
        PAD = {backend.pad_id}
        TOLERANCE = {tolerance!r}
        CASE = json.loads({case.to_json()!r})
        ''')
    code = body if body is not None else ORACLE_BODIES[oracle]
    return "\n".join([header, model_code(backend), setup, PATHS.strip() + "\n", code.strip()]) + "\n"
