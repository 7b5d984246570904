"""A third party's fuzzkv plugin, as tests/test_plugins.py installs it: one oracle and one backend, registered
through the ``fuzzkv.oracles`` and ``fuzzkv.backends`` entry point groups, touching no file of fuzzkv's.

The backend ("toy") drives the HF backend's model through its own class; with ``TOY_BUG=1`` its cached decoding
steps are off by half a logit, a cache bug of its own. The oracle ("toy-decode") compares its cached path with
its uncached one, and runs on the toy lane only; fuzzkv's cross oracle reaches the toy backend's cross lane by
itself."""

from __future__ import annotations

import os

from fuzzkv.backends.drivers import Driver
from fuzzkv.backends.interface import Backend, Capabilities, Trace
from fuzzkv.oracles import Comparison, Oracle
from fuzzkv.oracles.interface import run_path, teacher_forced
from fuzzkv.strategies import cases


class ToyBackend(Backend):
    name = "toy"

    def __init__(self, hf, buggy):
        self.hf, self.info, self.buggy = hf, hf.info, buggy
        self.capabilities = Capabilities(caches=("dynamic",), max_batch=hf.capabilities.max_batch)

    def cached(self, case, tokens=None, *, cache=None, chunks=None, precise=False):
        trace = self.hf.cached(case, tokens, cache=cache, chunks=chunks, precise=precise)
        if self.buggy:  # the decoding steps' logits (each predicts the token after a generated one) moved
            trace.logits = trace.logits.clone()  # the HF path's logits are inference tensors
            trace.logits[:, case.padded_length:] += 0.5
        return trace

    def reference(self, tokens, attention_mask, *, precise=False):
        return self.hf.reference(tokens, attention_mask, precise=precise)

    def generate(self, case):
        return self.hf.generate(case)

    def reproduction(self, oracle, body, case, bounds):
        return self.hf.reproduction(oracle, body, case, bounds)

    def precise_view(self, attn=None):
        precise = self.hf.precise_view(attn)
        return None if precise is None else ToyBackend(precise, self.buggy)

    def release_precise(self):
        self.hf.release_precise()


def _cached_vs_uncached(backend: Backend, case) -> list[Comparison]:
    cached: Trace = run_path("toy cached", backend.cached, case)
    return [Comparison("toy cached vs uncached", teacher_forced(backend, cached), cached)]


TOY_DECODE = Oracle("toy-decode", "the toy backend's cached decoding vs its uncached forward",
                    lambda space: cases(space, caches=("dynamic",)), _cached_vs_uncached, lanes=("toy",),
                    fit=lambda case: case, script='''
tokens, mask, got = cached(subject, CASE, PAD, DEVICE)
report("toy cached vs uncached", reference(subject, tokens, mask), got, mask[:, :-1].bool())
''')

DRIVER = Driver("toy", "Toy", "a toy backend over the HF model",
                convert=lambda hf: ToyBackend(hf, os.environ.get("TOY_BUG") == "1"), cross_lane="cross-toy")
