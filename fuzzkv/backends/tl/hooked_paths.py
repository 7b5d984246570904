"""How fuzzkv drives TransformerLens 2.x/3.x (``HookedTransformer``): built offline, adapted to the HF path code.

Standalone like :mod:`fuzzkv.backends.hf.paths` (torch, transformers, tokenizers and
transformer_lens only; no ``from __future__``): the legacy TL backend runs it, and its
reproduction scripts embed this source after ``hf_paths``'s, so a script builds the same
HookedTransformer and runs the same cached path as fuzzkv did.

The HookedTransformer is built from the very HF model: its config is written to a temporary
directory (TransformerLens converts it from there), its weights are converted from the HF
state dict without folding or centring (so raw logits compare), and a word-level tokenizer
is built in memory (TransformerLens's ``generate`` asserts one even for token ids).
"""

import contextlib
import copy
import functools
import tempfile
import types

import torch

from fuzzkv.backends.hf.paths import SilentlyUncached


def word_level_tokenizer(vocab_size, pad_id=None):
    """One word per id, plus a pad token past the model's vocabulary (no real input is ever mistaken for padding),
    or the id ``pad_id`` as the pad token, left padding (for TransformerLens to infer padding from it).
    add_bos_token and name_or_path keep TransformerLens from reloading it by name (a network call)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)} | ({"<pad>": vocab_size} if pad_id is None else {})
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    pad = "<pad>" if pad_id is None else f"t{pad_id}"
    return PreTrainedTokenizerFast(tokenizer_object=words, bos_token="t1", eos_token="t2", pad_token=pad,
                                   unk_token="t0", add_bos_token=True, name_or_path="fuzzkv-word-level",
                                   padding_side="left")


def build_hooked_transformer(hf_model):
    """A HookedTransformer with ``hf_model``'s weights, without any network call."""
    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens import HookedTransformer

    model = copy.deepcopy(hf_model).float()
    if not model.config.architectures:
        model.config.architectures = [type(model).__name__]  # TransformerLens reads architectures[0]
    with tempfile.TemporaryDirectory() as directory:
        name, cfg = tl_config_of(model.config, directory)
        state = loading.get_pretrained_state_dict(name, cfg, hf_model=model, dtype=torch.float32)
    hooked = HookedTransformer(cfg, tokenizer=word_level_tokenizer(model.config.vocab_size), move_to_device=False)
    hooked.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                       fold_value_biases=False, refactor_factored_attn_matrices=False)
    return hooked.eval()


def tl_config_of(hf_config, directory):
    """(the name TransformerLens converts ``hf_config`` from, its TransformerLens config): the config itself, saved
    in ``directory``, where this release converts any config; else the official name of the same sizes; else the
    official name of the same sizes but depth and vocabulary, those two set to ``hf_config``'s (a model built from
    that released config with only those shrunk, as fuzzkv builds one for a release that converts only official
    configs). Raises NotImplementedError saying which sizes it knows where none fits."""
    import transformer_lens.loading_from_pretrained as loading

    cfg = converted_from_config(hf_config, directory)
    converted = None if cfg is None else cfg.to_dict()
    if converted is not None and same_sizes(converted, hf_config):
        return directory, cfg
    try:
        # This release converts the architecture by official name only, each with its hard-coded sizes
        # (TransformerLens 2.3.0's Gemma-2 and Mistral): build from the official name of this model's sizes.
        name = official_name_of_same_size(hf_config, converted)
        return name, loading.get_pretrained_model_config(name, fold_ln=False, device="cpu", dtype=torch.float32,
                                                         local_files_only=True)
    except NotImplementedError:
        name = official_name_of_same_size(hf_config, converted, ignoring=SHRINKABLE)
    cfg = loading.get_pretrained_model_config(name, fold_ln=False, device="cpu", dtype=torch.float32,
                                              local_files_only=True)
    cfg.n_layers = hf_config.num_hidden_layers
    cfg.d_vocab = cfg.d_vocab_out = hf_config.vocab_size
    return name, cfg


def converted_from_config(hf_config, directory):
    """TransformerLens's conversion of ``hf_config`` itself (saved in ``directory``), or None where this release
    converts the architecture by official name only. Its sizes may still be fixed ones: see :func:`same_sizes`."""
    import transformer_lens.loading_from_pretrained as loading

    hf_config.save_pretrained(directory)  # config.json only
    try:
        return loading.get_pretrained_model_config(directory, fold_ln=False, device="cpu", dtype=torch.float32)
    except NotImplementedError:
        return None


@functools.cache
def offline_official_configs():
    """(name, TransformerLens config dict) of each official name this release converts offline, by its name alone
    (the others find nothing locally and raise): read once per process, as a run asks twice."""
    import transformer_lens.loading_from_pretrained as loading

    found = []
    for name in loading.OFFICIAL_MODEL_NAMES:
        try:
            found.append((name, loading.convert_hf_model_config(name, local_files_only=True)))
        except Exception:  # noqa: BLE001 - any refusal means: not convertible offline
            continue
    return tuple(found)


# TransformerLens's config keys and the HF config keys of the same sizes.
SIZES = (("d_model", "hidden_size"), ("n_layers", "num_hidden_layers"), ("n_heads", "num_attention_heads"),
         ("d_vocab", "vocab_size"), ("d_mlp", "intermediate_size"))
# What a model built from a released config may have shrunk: its depth and its vocabulary.
SHRINKABLE = ("n_layers", "d_vocab")


def same_sizes(tl_config, hf_config, ignoring=()):
    """Whether a TransformerLens config dict has the HF config's sizes (those both name, but ``ignoring``)."""
    pairs = [(tl_config.get(tl_key), getattr(hf_config, hf_key, None)) for tl_key, hf_key in SIZES
             if tl_key not in ignoring]
    return all(tl == hf for tl, hf in pairs if tl is not None and hf is not None)


def official_name_of_same_size(hf_config, converted=None, ignoring=()):
    """The official model name the installed TransformerLens converts offline to ``hf_config``'s architecture and
    sizes (but ``ignoring``). Raises NotImplementedError saying which sizes it knows where none matches
    (``converted``: what its conversion of the config itself gave, if anything)."""
    architecture = hf_config.architectures[0]
    known = []
    for name, cfg in offline_official_configs():
        if cfg.get("original_architecture") != architecture:
            continue
        if same_sizes(cfg, hf_config, ignoring):
            return name
        known.append(name.split("/")[-1])
    mine = ", ".join(f"{tl_key} {getattr(hf_config, key, None)}" for tl_key, key in SIZES)
    names = f"; its official names of this architecture: {', '.join(known)}" if known else ""
    if converted is not None:
        theirs = ", ".join(f"{tl_key} {converted.get(tl_key)}" for tl_key, _ in SIZES)
        raise NotImplementedError(f"it converts {architecture} to fixed sizes ({theirs}), not this model's ({mine})"
                                  f"{names}")
    if known:
        raise NotImplementedError(f"it converts {architecture} only from official names, at their sizes "
                                  f"({', '.join(known)}); none has {mine}")
    raise NotImplementedError(f"{architecture} is not currently supported")


def key_value_cache_class():
    """TransformerLens's key/value cache class: ``HookedTransformerKeyValueCache`` in 2.x, the same class renamed
    ``TransformerLensKeyValueCache`` (module ``transformer_lens.cache``) in 3.x."""
    from importlib.metadata import version

    if int(version("transformer-lens").split(".")[0]) >= 3:
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        return TransformerLensKeyValueCache
    from transformer_lens.past_key_value_caching import HookedTransformerKeyValueCache

    return HookedTransformerKeyValueCache


class HookedAsModel:
    """Lets the HF path code drive a HookedTransformer with its key/value cache (:func:`key_value_cache_class`).

    Padded batches pass their attention mask explicitly (the HF path code's mask over the sequence so far): an
    uncached call gets it whole, a cached call the new tokens' part, which the cache is documented to store
    ("If passed, we're doing caching and attention_mask will be stored in the cache"). With ``infer_pad_id``,
    a cached call passes no mask: TransformerLens infers it from that pad token (leading pads, left padding) and
    stores it in the cache itself; a chunk whose inferred mask is not its real one (a real token equal to the
    pad token where a leading pad would be) raises :class:`ReadAsPadding`. A cached call checks that the cache
    grew by the tokens fed.
    """

    def __init__(self, hooked, hf_config, infer_pad_id=None):
        self.hooked, self.config, self.infer_pad_id = hooked, hf_config, infer_pad_id
        self.inferring = None if infer_pad_id is None else word_level_tokenizer(hf_config.vocab_size, infer_pad_id)

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=True, **ignored):
        key_value_cache = key_value_cache_class()
        real_mask = None if attention_mask is None else attention_mask[:, -input_ids.shape[1]:]
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # unpadded: the call every TransformerLens user makes, with no mask
        if not use_cache:
            return types.SimpleNamespace(logits=self.hooked(input_ids, attention_mask=attention_mask), cache=None)
        if cache is None or not isinstance(cache, key_value_cache):
            cache = key_value_cache.init_cache(self.hooked.cfg, input_ids.device, input_ids.shape[0])
        before = cache[0].past_keys.shape[1]
        if self.infer_pad_id is None:
            new_tokens_mask = None if attention_mask is None else real_mask
            logits = self.hooked(input_ids, attention_mask=new_tokens_mask, past_kv_cache=cache)
        else:
            logits = self._inferring_padding(input_ids, real_mask, cache)
        if cache[0].past_keys.shape[1] != before + input_ids.shape[1]:
            raise SilentlyUncached(f"the cache did not grow from {before} to {before + input_ids.shape[1]} tokens")
        return types.SimpleNamespace(logits=logits, cache=cache)

    def _inferring_padding(self, input_ids, real_mask, cache):
        """A cached call with no mask: TransformerLens infers it from the pad token of the tokenizer it holds."""
        if real_mask is not None:
            refuse_misread_padding(self.hooked, self.inferring, input_ids, real_mask)
        with holding(self.hooked, self.inferring):
            return self.hooked(input_ids, past_kv_cache=cache)

    __call__ = forward


class ReadAsPadding(ValueError):
    """TransformerLens infers padding from the pad token (its leading occurrences, with left padding): a case
    whose real tokens it would read as padding is not one this mode can run (not a cache bug)."""


def refuse_misread_padding(hooked, inferring, tokens, real_mask):
    """Raise :class:`ReadAsPadding` where TransformerLens, inferring padding with the tokenizer ``inferring``, would
    not read ``tokens``' real mask ``real_mask`` (a real token equal to the pad token where a leading pad would be)."""
    from transformer_lens import utils

    inferred = utils.get_attention_mask(inferring, tokens, hooked.cfg.default_prepend_bos)
    if not torch.equal(inferred.to(real_mask.dtype), real_mask):
        raise ReadAsPadding(f"a real token equal to the pad token {inferring.pad_token_id} where TransformerLens "
                            "reads leading padding")


@contextlib.contextmanager
def holding(hooked, tokenizer):
    """``hooked`` with ``tokenizer`` (whose pad token TransformerLens infers padding from) in the block."""
    own, hooked.tokenizer = hooked.tokenizer, tokenizer
    try:
        yield hooked
    finally:
        hooked.tokenizer = own


def hooked_generate_rows(hooked, ids, mask, max_new_tokens, pad_id):
    """TransformerLens's generate on each row of a left-padded batch alone (this API infers padding from the pad
    token, so a prompt or generated token equal to it would be masked: not a cache bug), put back in the batch's
    layout: (sequences [B, L + n], step logits n x [B, V])."""
    rows = []
    for row, row_mask in zip(ids, mask[:, :ids.shape[1]]):
        sequence, steps = hooked_generate(hooked, row[row_mask.bool()].unsqueeze(0), max_new_tokens)
        padding = torch.full((1, ids.shape[1] - int(row_mask.sum())), pad_id, dtype=sequence.dtype,
                             device=sequence.device)
        rows.append((torch.cat([padding, sequence], 1), steps))
    sequences = torch.cat([sequence for sequence, _ in rows])
    return sequences, [torch.cat([steps[i] for _, steps in rows]) for i in range(max_new_tokens)]


def hooked_generate_batch(hooked, ids, mask, max_new_tokens, pad_id):
    """TransformerLens's generate on a left-padded batch whole, inferring its padding from the pad token ``pad_id``
    as it does for a batch of prompts: (sequences [B, L + n], step logits n x [B, V]). Raises :class:`ReadAsPadding`
    where a real token, of a prompt or generated and fed back, would read as padding (some releases infer each
    step's mask from the tokens fed: a generated pad token would be masked there, which is not a cache bug)."""
    inferring = word_level_tokenizer(hooked.cfg.d_vocab, pad_id)
    prompt_mask = mask[:, :ids.shape[1]]
    refuse_misread_padding(hooked, inferring, ids, prompt_mask)
    with holding(hooked, inferring):
        sequences, steps = hooked_generate(hooked, ids, max_new_tokens)
    for fed in sequences[:, ids.shape[1]:-1].T:  # each generated token fed back, as a one-token chunk
        refuse_misread_padding(hooked, inferring, fed.unsqueeze(1), torch.ones_like(fed).unsqueeze(1))
    return sequences, steps


@torch.inference_mode()
def hooked_generate(hooked, ids, max_new_tokens):
    """TransformerLens's generate returns tokens only: the unembed hook records each step's logits."""
    steps = []
    hook = hooked.unembed.register_forward_hook(lambda _m, _i, out: steps.append(out[:, -1].clone()))
    try:
        sequences = hooked.generate(input=ids, max_new_tokens=max_new_tokens, do_sample=False, stop_at_eos=False,
                                    use_past_kv_cache=True, verbose=False)
    finally:
        hook.remove()
    return sequences, steps[:max_new_tokens]
