"""TransformerLens 2.x/3.x: the ``HookedTransformer`` API, where the Bloom cache bug lived.

The HookedTransformer is built offline from the very HF model fuzzkv made or loaded: its
config is written to a temporary directory (TransformerLens converts it from there), its
weights are converted from the HF state dict without folding or centring (so raw logits
compare), and a word-level tokenizer is built in memory (TransformerLens's ``generate``
asserts one even for token ids). Batches are unpadded: this API infers padding from the
pad token, so a generated token equal to it would be masked, which is not a cache bug.
"""

from __future__ import annotations

import copy
import tempfile

import torch

from fuzzkv.backends import Backend, Trace, generation_trace, prefill_and_decode
from fuzzkv.backends.hf import HFBackend


def _tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # One word per id, plus a pad token past the model's vocabulary: no real input is ever
    # mistaken for padding. add_bos_token and name_or_path keep TransformerLens from
    # reloading the tokenizer by name (a network call).
    vocab = {f"t{i}": i for i in range(vocab_size)} | {"<pad>": vocab_size}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=words, bos_token="t1", eos_token="t2", pad_token="<pad>",
                                   unk_token="t0", add_bos_token=True, name_or_path="fuzzkv-word-level")


def build_hooked_transformer(hf_model):
    """A HookedTransformer with ``hf_model``'s weights, without any network call."""
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    model = copy.deepcopy(hf_model).float()
    if not model.config.architectures:
        model.config.architectures = [type(model).__name__]  # TransformerLens reads architectures[0]
    with tempfile.TemporaryDirectory() as directory:
        model.config.save_pretrained(directory)  # config.json only
        cfg = loading.get_pretrained_model_config(directory, fold_ln=False, device="cpu", dtype=torch.float32)
        state = loading.get_pretrained_state_dict(directory, cfg, hf_model=model, dtype=torch.float32)
    hooked = HookedTransformer(cfg, tokenizer=_tokenizer(model.config.vocab_size), move_to_device=False)
    hooked.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                       fold_value_biases=False, refactor_factored_attn_matrices=False)
    return hooked.eval()


class LegacyTLBackend(Backend):
    """Runs TransformerLens 2.x/3.x's HookedTransformer with its HookedTransformerKeyValueCache."""

    name = "tl"
    caches = ("dynamic",)
    max_batch = 1  # unpadded batches only (see the module docstring)

    def __init__(self, hf: HFBackend, api: str):
        self.hf, self.info, self.api = hf, hf.info, api
        self.device, self.pad_id = hf.device, hf.pad_id
        self.model = build_hooked_transformer(hf.model)
        self.architecture = type(hf.model).__name__
        self._model64 = None

    @torch.inference_mode()
    def cached(self, case, tokens=None, *, cache=None, chunks=None) -> Trace:
        from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache

        batch = self.hf.pad_batch(case)
        store = HookedTransformerKeyValueCache.init_cache(self.model.cfg, self.device, case.batch_size)

        def step(seq, start, size):
            before = store[0].past_keys.shape[1]
            logits = self.model(seq[:, start:start + size], past_kv_cache=store)
            if store[0].past_keys.shape[1] != before + size:
                from fuzzkv.backends.tl import SilentlyUncached

                raise SilentlyUncached(f"the cache did not grow from {before} to {before + size} tokens")
            return logits

        return prefill_and_decode(batch.ids, batch.full_mask, chunks or case.prefill_chunks, tokens, step)

    def reused(self, case, tokens) -> Trace:
        raise NotImplementedError("cache reuse is an HF-backend oracle")

    @torch.inference_mode()
    def reference(self, tokens, attention_mask, *, float64=False):
        model = self._float64_model() if float64 else self.model
        logits = model(tokens[:, :-1].to(self.device))
        return logits.double() if float64 else logits.float()

    def _float64_model(self):
        if self._model64 is None:
            from fuzzkv.backends.tl import float64_copy

            self._model64 = float64_copy(self.model)
            self._model64.cfg.dtype = torch.float64
        return self._model64

    def release_float64(self) -> None:
        self._model64 = None

    @torch.inference_mode()
    def generate(self, case) -> Trace:
        """TransformerLens's generate returns tokens only: the unembed hook records each step's logits."""
        batch = self.hf.pad_batch(case)
        steps = []
        hook = self.model.unembed.register_forward_hook(lambda _m, _i, out: steps.append(out[:, -1].clone()))
        try:
            sequences = self.model.generate(input=batch.ids, max_new_tokens=case.max_new_tokens, do_sample=False,
                                            stop_at_eos=False, use_past_kv_cache=True, verbose=False)
        finally:
            hook.remove()
        return generation_trace(sequences, batch.full_mask, steps[: case.max_new_tokens], batch.prompt_length)

    def reproduction(self, oracle, case, tolerance) -> str:
        return (f"# Reproduce with {self.api}: build the HookedTransformer as fuzzkv.backends.tl_legacy."
                f"build_hooked_transformer does,\n# then run oracle {oracle!r} on this case:\n"
                f"# {case.to_json()}\n" + self.hf.reproduction("decode", case, tolerance))
