"""The paths fuzzkv compares, as plain functions over a causal LM: torch and transformers only.

This module is the single source of truth for how fuzzkv drives a model: the HF backend
calls these functions, the TransformerLens backends call them through small adapters, the
benchmark's forward-call floor calls them, and every reproduction script embeds this
file's source verbatim. A script therefore runs the very code that found the failure.

It must stay standalone: no fuzzkv imports and no ``from __future__`` line (the source is
pasted into the middle of a script). A case is passed as the dict of ``Case.to_dict()``.
"""

import copy
import functools
import inspect
import math
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, EncoderDecoderCache, StaticCache
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# transformers 5.24 renamed the forward argument ``past_key_values`` to ``cache`` (and the
# output field with it); earlier releases know only the old names.
CACHE_KEYWORDS = ("cache", "past_key_values")


class SilentlyUncached(RuntimeError):
    """A call that was given a cache did not extend it: the 'cached' path computed without one."""


class SettingIgnored(RuntimeError):
    """The library took a setting and did not apply it: what ran is not what was asked (a knob that did nothing)."""


# The cache_implementation names generate() builds no preallocated (static) cache for; every other name it lists
# does (4.46's SlidingWindowCache and HybridCache included).
UNSTATIC_IMPLEMENTATIONS = ("dynamic", "dynamic_full", "offloaded", "quantized")
STATIC_CACHE_CLASS_ENDINGS = ("StaticCache", "HybridCache", "SlidingWindowCache", "HybridChunkedCache")


def static_cache_in_effect(cache_implementation, out):
    """Raise SettingIgnored where generate() was asked for a static ``cache_implementation`` and returned another
    kind of cache: transformers 5.x unsets an explicit "hybrid" and runs a DynamicCache, without a word."""
    if not cache_implementation or cache_implementation in UNSTATIC_IMPLEMENTATIONS:
        return
    used = out.get("cache", out.get("past_key_values"))  # 5.24 names it ``cache``, earlier ``past_key_values``
    if isinstance(used, EncoderDecoderCache):  # a seq2seq model's: the decoder's self-attention part is the kind
        used = used.self_attention_cache
    if used is None or type(used).__name__.endswith(STATIC_CACHE_CLASS_ENDINGS):
        return
    raise SettingIgnored(f"generate(cache_implementation={cache_implementation!r}) ran on a {type(used).__name__}, "
                         f"not a static cache: transformers {transformers.__version__} took the setting and did not "
                         "apply it")


def transformers_major() -> int:
    return int(transformers.__version__.split(".")[0])


def transformers_release():
    """(major, minor) of the installed transformers."""
    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


# transformers 5.24 declares which caches a crop can put back (``Cache.is_croppable``) and makes sliding-window
# layers keep what a crop needs only once told to (``activate_past_recording``); earlier releases have neither.
CROP_PROTOCOL_SINCE = (5, 24)


def dtype_keyword() -> str:
    """``from_config`` / ``from_pretrained`` take ``dtype`` in transformers 5.x, ``torch_dtype`` in 4.x."""
    return "dtype" if transformers_major() >= 5 else "torch_dtype"


REFERENCE_FAN_IN = 64  # the width at which a weight's std is exactly init_std
# Every other parameter moves by about half init_std: norm weights 1 + N(0, 0.1) (and a Gemma-style ``1 + w``
# norm's zero weights N(0, 0.1)), zero biases N(0, 0.1), learnable scalars and gates c * (1 + N(0, 0.1)).
SPREAD_PER_INIT_STD = 0.5
# State-space parameters stay where the recurrence is stable: A = -exp(A_log) in [-8, -1], and the step
# softplus(dt_bias) log-uniform in [1e-3, 1e-1] (Mamba's own init ranges).
SSM_DECAY_RANGE = (1.0, 8.0)
SSM_STEP_RANGE = (1e-3, 1e-1)


def sensitise(model, init_std, seed=0):
    """Redraw every parameter so that none sits at a constant default a mistake could hide behind.

    Matrices (Linear/Embedding weights, convolutions, stacked experts) get std ``init_std * sqrt(64 / fan_in)``
    (fan-in: the last dimension, an embedding's width; a convolution's channels per group x kernel).
    transformers' own init (std 0.02) makes logits so flat that an off-by-one position barely moves them; one std
    for every width would blow a full-size model's residual stream up until rounding swamps everything. Scaled to
    each tensor's fan-in, logits sit at a trained model's order (|logits| ~ 5-15) at any size, and a tiny model
    (width 64) keeps std ``init_std``. Vectors and scalars (norm weights, biases, gates) are perturbed around their
    default value, so a norm applied without its weight, or a bias dropped, shows; state-space parameters are
    redrawn in their stable ranges.

    Each parameter is drawn in float32 on the CPU from its own generator, seeded by ``seed`` and its name: a
    weight's value does not depend on the device, on the order of the draws (they run on every core at once),
    nor, beyond rounding, on the dtype (a half-precision model holds the float32 draws rounded).
    """
    spread = SPREAD_PER_INIT_STD * init_std
    convolutions = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    fan_ins = {id(m.weight): m.weight[0].numel() for m in model.modules() if isinstance(m, convolutions)}

    def redraw(item):
        name, parameter = item
        generator = torch.Generator().manual_seed(_parameter_seed(seed, name))
        with torch.no_grad():  # per thread: grad mode is thread-local
            _redraw(name.rsplit(".", 1)[-1], name, parameter, init_std, spread, fan_ins.get(id(parameter)), generator)

    floating = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:
        list(pool.map(redraw, floating))  # the draws release the GIL: one parameter per core at a time


def _parameter_seed(seed, name):
    # 32 bits: the CPU generator (mt19937) keeps only the low 32 bits of a seed.
    return zlib.crc32(f"{seed}/{name}".encode())


def _redraw(leaf, name, parameter, init_std, spread, conv_fan_in, generator):
    """One parameter, redrawn by what it is, in float32 on the CPU (then written in its own dtype and device)."""
    if leaf == "A_log":
        low, high = SSM_DECAY_RANGE
        value = torch.empty(parameter.shape).uniform_(low, high, generator=generator).log_()
    elif leaf == "dt_bias" or name.endswith("dt_proj.bias"):
        low, high = SSM_STEP_RANGE
        log_low, log_high = torch.tensor([low, high], dtype=torch.float64).log().tolist()
        step = torch.empty(parameter.shape).uniform_(log_low, log_high, generator=generator).exp()
        value = step + torch.log(-torch.expm1(-step))  # the inverse of softplus
    elif parameter.dim() >= 2:  # matrices: Linear/Embedding weights, convolutions, stacked experts
        fan_in = conv_fan_in or parameter.shape[-1]
        std = init_std * (REFERENCE_FAN_IN / fan_in) ** 0.5
        if parameter.dtype == torch.float32 and parameter.device.type == "cpu":
            parameter.normal_(0.0, std, generator=generator)  # in place: no float32 copy of a large matrix
            return
        value = torch.empty(parameter.shape).normal_(0.0, std, generator=generator)
    else:
        # Vectors and scalars: c * (1 + N(0, spread)) around a non-zero value (norm weights of 1, gates, D),
        # N(0, spread) where it is zero (biases, the w of a ``1 + w`` norm).
        noise = torch.empty(parameter.shape).normal_(0.0, spread, generator=generator)
        default = parameter.detach().float().cpu()
        value = torch.where(default == 0, noise, default * (1 + noise))
    parameter.copy_(value)


def random_model(config, seed, init_std, attn, dtype="float32", device="cpu"):
    """The architecture of ``config`` (a config.json dict) with seeded random weights (see ``sensitise``), built
    in ``dtype`` on ``device``.

    On transformers 5.x the weights are created on the meta device and each is drawn once, in place: no default
    initialisation to overwrite, no float32 copy of a half-precision model. transformers' own initialisation then
    gives the vectors (norm weights, biases) and buffers their defaults, which ``sensitise`` perturbs: the
    defaults ``from_pretrained`` gives the keys a checkpoint lacks. transformers 4.x builds a whole float32 model
    first (its initialisation does not set every default on the meta device)."""
    config = dict(config)
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    cfg.use_cache = True  # MPT ships use_cache=False
    target = TORCH_DTYPES[dtype]
    torch.manual_seed(seed)  # defaults that transformers draws at random (rare, and perturbed anyway) stay seeded
    model = _empty_model(cfg, attn, target, device) if transformers_major() >= 5 else None
    if model is None:
        model = auto_class(cfg).from_config(cfg, attn_implementation=attn, **{dtype_keyword(): torch.float32})
        sensitise(model, init_std, seed)
        return model.to(device=device, dtype=target)
    sensitise(model, init_std, seed)
    return model


def auto_class(cfg):
    """The auto class a config's model is built with: an encoder-decoder's seq2seq LM (BART's
    BartForConditionalGeneration, not its decoder half), else the causal LM."""
    names = vars(transformers.models.auto.modeling_auto)
    if cfg.is_encoder_decoder:
        from transformers import AutoModelForImageTextToText, AutoModelForSeq2SeqLM, AutoModelForSpeechSeq2Seq

        # a type both mappings list (SeamlessM4T) is built from text; one the image-text-to-text mapping lists
        # (Florence-2, Pix2Struct, VisionEncoderDecoderModel: an image for the encoder) as its class there
        if cfg.model_type in names["MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"]:
            return AutoModelForSeq2SeqLM
        images = names.get("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", {})
        return AutoModelForImageTextToText if cfg.model_type in images else AutoModelForSpeechSeq2Seq
    if _has_tower(cfg, IMAGE):  # a vision-language model: its image-text-to-text class
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText
    if _has_tower(cfg, AUDIO):  # an audio LM: its mapping's class
        return next(getattr(transformers, auto) for table, auto in AUDIO_LM_CLASSES if cfg.model_type in names.get(table, {}))
    return AutoModelForCausalLM


# The auto class an audio LM is built with: the first whose mapping lists its type.
AUDIO_LM_CLASSES = (("MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES", "AutoModelForMultimodalLM"),
                    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "AutoModelForSeq2SeqLM"),
                    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "AutoModelForCausalLM"))


def _empty_model(cfg, attn, dtype, device):
    """``cfg``'s model in ``dtype`` on ``device``: matrices allocated and left for ``sensitise``, vectors and buffers
    at transformers' defaults; None when transformers leaves a default unset (the caller then builds it whole)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):  # buffers (rotary frequencies...) are computed as usual
        model = auto_class(cfg).from_config(cfg, attn_implementation=attn, dtype=dtype)
    for module in model.modules():
        for key, parameter in module._parameters.items():
            if parameter is not None and parameter.device.type == "meta":
                fill = torch.empty if parameter.dim() >= 2 else functools.partial(torch.full, fill_value=float("nan"))
                value = fill(parameter.shape, dtype=parameter.dtype, device=device)
                module._parameters[key] = torch.nn.Parameter(value, requires_grad=parameter.requires_grad)
    model.tie_weights()
    for module in model.modules():
        module._is_hf_initialized = False  # set by the construction's init, which ran on the empty weights
    for parameter in model.parameters():
        if parameter.dim() >= 2:
            parameter._is_hf_initialized = True  # drawn by sensitise: transformers' init skips it
    model.initialize_weights()
    if any(p.is_floating_point() and p.isnan().any() for p in model.parameters() if p.dim() < 2):
        return None
    return model.to(device)  # buffers too


def pretrained(path, attn, gguf_file=None, dtype="float32", device="cpu", trust_remote_code=False):
    """Weights from a local directory in ``dtype`` on ``device``: safetensors only (never a pickle), read lazily
    (memory-mapped) straight into the model, or a GGUF file in it (de-quantized by transformers). Local files only:
    no network. ``trust_remote_code``: the model is the class the folder's own code defines (its config.json's
    auto_map), and that code runs (the run was given --trust-remote-code); else no code of the folder's ever runs."""
    source = {"gguf_file": gguf_file} if gguf_file else {"use_safetensors": True}
    # A GGUF file is de-quantized to float32 and then cast, as fuzzkv always did: its calibrated tolerances and
    # canaries were measured that way. Safetensors are read straight into the run's dtype.
    load_dtype = torch.float32 if gguf_file else TORCH_DTYPES[dtype]
    kind = None if gguf_file or trust_remote_code else declared_class(folder_config(path))[1]
    # trust_remote_code is always given: left unset, transformers asks on the terminal whether to run a folder's code.
    model = (kind or AutoModelForCausalLM).from_pretrained(path, local_files_only=True, attn_implementation=attn,
                                                           device_map=device, trust_remote_code=trust_remote_code,
                                                           **source, **{dtype_keyword(): load_dtype})
    if gguf_file:
        # The weights are plain tensors once de-quantized; the GGUF quantizer would refuse a dtype cast.
        model.hf_quantizer, model.is_quantized = None, False
    return model


def folder_config(path):
    """The config.json of a local directory or a hub id in the local HuggingFace cache, as written (no class
    resolved, no code run); None where there is none or it is unreadable."""
    try:
        return transformers.PretrainedConfig.get_config_dict(path, local_files_only=True)[0]
    except (OSError, ValueError):
        return None


GENERATIVE_LM_TABLES = ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES")


def declared_class(config):
    """(the class name ``config``'s ``architectures`` names first, the transformers causal-LM class of that name or
    None): a folder is loaded as the class it names. (None, None) where it names none; (name, None) where the name
    is not a causal-LM class of this transformers (a custom class, or a base model: AutoModelForCausalLM decides)."""
    names = (config or {}).get("architectures") or []
    if not names:
        return None, None
    from transformers.models.auto import modeling_auto

    # the generative LM classes fuzzkv drives: causal LMs and seq2seq LMs (a BART folder is its seq2seq model)
    tables = [vars(modeling_auto).get(name, {}) for name in GENERATIVE_LM_TABLES]
    causal = {n for table in tables for value in table.values()
              for n in (value if isinstance(value, (list, tuple)) else [value])}
    kind = getattr(transformers, names[0], None) if names[0] in causal else None
    return names[0], kind if isinstance(kind, type) else None


def shipped_class(config):
    """The causal-LM class ``config``'s auto_map names (code the folder ships: ``modeling_x.MyForCausalLM``, or
    ``org/repo--modeling_x.MyForCausalLM``), by its class name; None where it names none."""
    reference = ((config or {}).get("auto_map") or {}).get("AutoModelForCausalLM")
    if not isinstance(reference, str):
        return None
    return reference.split("--")[-1].rsplit(".", 1)[-1]


def place(model, device, dtype):
    """``model`` in eval mode on ``device`` in ``dtype``, cast only when its weights are in another dtype: a cast
    also rounds the buffers transformers keeps in float32 in a half-precision model (rotary frequencies), which a
    model built or loaded in ``dtype`` keeps as its users run it."""
    target = TORCH_DTYPES[dtype]
    if model.dtype != target:
        model = model.to(dtype=target)
    return model.to(device).eval()


def takes(forward, name):
    """Whether a forward (or any callable) takes the keyword ``name`` by its signature."""
    return name in inspect.signature(forward).parameters


def accepts(model, name):
    """Whether ``model``'s forward takes ``name``: the first forward in its class hierarchy that names it,
    or that takes no ``**kwargs`` (and so decides), answers; a subclass may pass it on through ``**kwargs``."""
    for cls in type(model).__mro__:
        forward = cls.__dict__.get("forward")
        if forward is None:
            continue
        parameters = inspect.signature(forward).parameters
        if name in parameters:
            return True
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return False
    return False


def declared_cache_keyword(model):
    """The name under which ``model``'s forward takes the cache, or None when no forward in its class
    hierarchy names one (RWKV's ``state``, OpenAI GPT): the first forward that names one decides (a
    subclass may take it through ``**kwargs``)."""
    for cls in type(model).__mro__:
        forward = cls.__dict__.get("forward")
        names = [name for name in CACHE_KEYWORDS if forward is not None and takes(forward, name)]
        if names:
            return names[0]
    return None


def cache_keyword(model):
    """The name under which ``model``'s forward takes the cache (``past_key_values`` where none is declared)."""
    return declared_cache_keyword(model) or "past_key_values"


def returned_cache(output):
    """The cache a forward returned, from whichever output field this version fills."""
    for name in CACHE_KEYWORDS:
        value = output.get(name) if hasattr(output, "get") else getattr(output, name, None)
        if value is not None:
            return value
    return None


def positions_from_mask(mask):
    """Position ids that count only real tokens, so padding never shifts a position."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def padded(case, pad_id, device):
    """The case's prompts padded into ids [B, L], and the mask of the whole final sequence [B, L + new]."""
    prompts = case["prompts"]
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length + case["max_new_tokens"]), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        start = length - len(prompt) if case["padding_side"] == "left" else 0
        ids[row, start:start + len(prompt)] = torch.tensor(prompt)
        mask[row, start:start + len(prompt)] = 1
    mask[:, length:] = 1
    return ids.to(device), mask.to(device)


def encoder_inputs(case, pad_id, device, repeat=1):
    """An encoder-decoder case's encoder ids [B, S], padded on the right (as tokenizers pad them), and their mask
    [B, S], each row ``repeat`` times (a beam search's returned sequences); None for a decoder-only case."""
    rows = [row for row in case.get("encoder") or () for _ in range(repeat)]
    if not rows:
        return None
    ids = torch.full((len(rows), max(len(row) for row in rows)), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, tokens in enumerate(rows):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        mask[row, :len(tokens)] = 1
    return ids.to(device), mask.to(device)


# A speech model's encoder input: audio drawn per row, seeded by the row's encoder ids (so a row alone and in a batch,
# cached and uncached, hears the same audio). Feature frames per encoder id, where the audio's length follows the
# row's (padded on the right with a frame mask, as a feature extractor pads); a Whisper-style encoder takes a fixed
# window of mel frames (twice its position table: its convolutions halve it), whatever the row's length.
# Raw audio (a waveform encoder's ``input_values``): 1,600 samples per encoder id, 0.1 s at 16 kHz, enough for any
# of their convolution stacks to make a frame of it (and a whole number of Moonshine Streaming's 80-sample frames,
# the multiple its processor pads to).
AUDIO_FRAMES_PER_TOKEN = 4
AUDIO_SAMPLES_PER_TOKEN = 1600
# A feature frame's width (its feature extractor's ``feature_size``) as the encoder's config declares it: the
# product of the first of these groups of attributes it has. Speech2Text: filter banks per channel x channels; a
# Parakeet encoder (Canary's, Cohere ASR's, their ``encoder_config``): mel bins.
FRAME_WIDTH_NAMES = (("input_feat_per_channel", "input_channels"), ("num_mel_bins",))


def encoder_input_name(model):
    """The keyword generate() feeds the encoder's input under: the model's ``main_input_name``, or its ``encoder``'s
    where that names another (SpeechEncoderDecoderModel's ``inputs`` is its Wav2Vec2's ``input_values``), as
    GenerationMixin._prepare_model_inputs picks it."""
    encoder = getattr(model, "encoder", None)  # generate() asks hasattr(self, "encoder") too
    return encoder.main_input_name if model.config.is_encoder_decoder and encoder is not None else model.main_input_name


def encoder_keywords(model, ids, mask):
    """The keywords that feed an encoder-decoder model's encoder the batch of encoder rows ``ids`` (and ``mask``):
    the ids themselves for a text encoder; audio seeded by each row's ids for a speech encoder (by its input's name,
    :func:`encoder_input_name`: mel or filter-bank features, or a waveform)."""
    name = encoder_input_name(model)
    if encoder_tower(model) is not None:
        return _image_encoder_keywords(model, ids, mask)
    if name not in ("input_values", "input_features"):
        return {"input_ids": ids, "attention_mask": mask}
    rows = [row[real.bool()].tolist() for row, real in zip(ids, mask)]
    config = model.config
    place = {"device": ids.device, "dtype": model.dtype}
    if name == "input_values":  # a waveform: [B, samples], a mask
        return _padded_audio("input_values", rows, AUDIO_SAMPLES_PER_TOKEN, (), place)
    if getattr(config, "num_mel_bins", None):  # Whisper: [B, mel bins, a fixed window of frames], no mask
        shape = (config.num_mel_bins, 2 * config.max_source_positions)
        return {"input_features": torch.stack([_audio(row, shape) for row in rows]).to(**place)}
    # Speech2Text, Parakeet: [B, frames, features], a mask
    return _padded_audio("input_features", rows, AUDIO_FRAMES_PER_TOKEN, (_frame_width(model.get_encoder().config),),
                         place)


# An image encoder's input: pixels, or Pix2Struct's flattened patches.
IMAGE_INPUTS = ("pixel_values", "flattened_patches")


def encoder_tower(model):
    """The config of the vision tower an encoder-decoder model's encoder sees an image with: its ``vision_config``
    (Florence-2, Pix2Struct, PP-FormulaNet), or its encoder's own where that takes an image
    (VisionEncoderDecoderModel's ViT); None for a text or speech encoder, and for any other model."""
    config = model.config
    if not config.is_encoder_decoder:
        return None
    tower = getattr(config, "vision_config", None)
    return tower if tower is not None else config.encoder if encoder_input_name(model) in IMAGE_INPUTS else None


def _image_encoder_keywords(model, ids, mask):
    """An image encoder's keywords: one image per row, seeded by the row's encoder ids (as a speech encoder's
    audio is), as its processor lays the batch out: ``pixel_values`` [B, C, H, W], or Pix2Struct's flattened
    patches and their mask. An encoder that reads text as well (Florence-2: its input is ``input_ids``) takes the
    row's ids after a run of its image token as long as an image's features, the layout its processor makes
    (processing_florence2.py: the image's tokens, then the text), padded on the right."""
    rows = [row[real.bool()].tolist() for row, real in zip(ids, mask)]
    name, tower = encoder_input_name(model), encoder_tower(model)
    place = {"device": ids.device, "dtype": model.dtype}
    if name == "flattened_patches":
        patches = torch.stack([_flattened_patches(tower, seeded_by(row)) for row in rows]).to(**place)
        return {name: patches, "attention_mask": torch.ones(patches.shape[:2], dtype=torch.long, device=ids.device)}
    pixels = torch.stack([_still_image(tower, seeded_by(row)) for row in rows]).to(**place)
    if name in IMAGE_INPUTS:
        return {name: pixels}
    image = torch.full((len(rows), encoder_image_positions(model)), encoder_image_token(model), dtype=ids.dtype,
                       device=ids.device)
    return {"input_ids": torch.cat([image, ids], 1), "attention_mask": torch.cat([torch.ones_like(image), mask], 1),
            "pixel_values": pixels}


def encoder_image_token(model):
    """The id an encoder that reads text as well as an image (Florence-2) holds where its image's features go: never
    text, in its encoder rows either; None for any other model."""
    reads_text = encoder_tower(model) is not None and encoder_input_name(model) not in IMAGE_INPUTS
    return _declared_id(model.config, IMAGE.tokens) if reads_text else None


# Each model's count, once: every batch's encoder rows are laid out with it, and counting runs the vision tower.
_ENCODER_IMAGE_POSITIONS: "weakref.WeakKeyDictionary[object, int]" = weakref.WeakKeyDictionary()


def encoder_image_positions(model):
    """The encoder positions an image's run of tokens takes before the text (Florence-2's: as many as its image's
    features; the text has the rest of the position table); 0 for any other model."""
    if encoder_image_token(model) is None:
        return 0
    if model not in _ENCODER_IMAGE_POSITIONS:
        pixels = _still_image(encoder_tower(model), seeded_by([]))[None].to(device=model.device, dtype=model.dtype)
        _ENCODER_IMAGE_POSITIONS[model] = tokens_per_image(model, {"pixel_values": pixels})
    return _ENCODER_IMAGE_POSITIONS[model]


def _flattened_patches(tower, generator):
    """One image as Pix2Struct's image processor flattens it (image_processing_pix2struct.py): PATCH_GRID's rows x
    columns of patches, each its (1-based) row, its column, then its pixels (``patch_embed_hidden_size`` values)."""
    rows, columns = PATCH_GRID[1:]
    row, column = torch.meshgrid(torch.arange(rows) + 1, torch.arange(columns) + 1, indexing="ij")
    pixels = torch.randn((rows * columns, tower.patch_embed_hidden_size), generator=generator)
    return torch.cat([row.reshape(-1, 1), column.reshape(-1, 1), pixels], 1)


def _frame_width(config):
    """A feature frame's width, as ``config`` (a speech encoder's) declares it (``FRAME_WIDTH_NAMES``)."""
    names = next(group for group in FRAME_WIDTH_NAMES if all(hasattr(config, name) for name in group))
    return math.prod(getattr(config, name) for name in names)


def _padded_audio(keyword, rows, per_token, width, place):
    """Each row's audio (``per_token`` steps of shape ``width`` per encoder id), padded on the right with zeros, and
    the mask of its real steps, as a feature extractor pads a batch."""
    steps = per_token * max(len(row) for row in rows)
    audio = torch.zeros((len(rows), steps, *width))
    real = torch.zeros((len(rows), steps), dtype=torch.long)
    for index, row in enumerate(rows):
        audio[index, :per_token * len(row)] = _audio(row, (per_token * len(row), *width))
        real[index, :per_token * len(row)] = 1
    return {keyword: audio.to(**place), "attention_mask": real.to(place["device"])}


def _audio(row, shape):
    """Audio features of ``shape`` drawn from a seed of one row's encoder ids."""
    return torch.randn(shape, generator=seeded_by(row, "audio:"))


def seeded_by(tokens, salt=""):
    """A generator seeded by ``tokens`` (and ``salt``): the same tokens draw the same image or audio in every path."""
    return torch.Generator().manual_seed(zlib.crc32((salt + ",".join(str(int(t)) for t in tokens)).encode()))


# generate()'s step that runs an encoder-decoder's encoder on its inputs: transformers 5's, then 4's name for it.
ENCODER_STEPS = ("_maybe_prepare_encoder_kwargs_for_generation", "_prepare_encoder_decoder_kwargs_for_generation")


class DecoderView:
    """An encoder-decoder model seen as its decoder over one batch's encoder output, so that every path drives it
    as it drives a causal LM: a call's ``input_ids`` are decoder ids, fed through the cache (an
    EncoderDecoderCache: self-attention and cross-attention), with the encoder's padding mask and the decoder
    tokens' own mask (all ones: a case's decoder prompts are all of one length, never padded). The encoder runs
    once per view, as generate() runs it once."""

    def __init__(self, model, encoder):
        self.model, self.config = model, model.config
        self.fed = encoder_keywords(model, *encoder)  # the encoder's input: ids, or audio drawn from them
        self.keyword = cache_keyword(model)
        self._encoded = None

    def encoded(self):
        """The encoder's output for this view's batch (computed on first use), as generate() computes it: by the
        model's own encoding step (Florence-2's scatters its image's features into the text its encoder reads,
        which ``get_encoder()`` alone, a text encoder, would not see)."""
        if self._encoded is None:
            name = encoder_input_name(self.model)
            rest = {key: value for key, value in self.fed.items() if key != name}
            prepare = next(getattr(self.model, step) for step in ENCODER_STEPS if hasattr(self.model, step))
            self._encoded = prepare(self.fed[name], rest, name, self.model.generation_config)["encoder_outputs"]
        return self._encoded

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=False):
        """``attention_mask``: the decoder tokens' mask, of the tokens so far. A cached call is given the encoder's
        output (and its input's mask), as generate() gives it; an uncached call the encoder's input, as the plain
        forward call takes it."""
        mask = {"attention_mask": self.fed["attention_mask"]} if "attention_mask" in self.fed else {}
        encoder = {"encoder_outputs": self.encoded(), **mask} if use_cache else self.fed
        return self.model(**encoder, decoder_input_ids=input_ids, decoder_attention_mask=attention_mask,
                          use_cache=use_cache, **{self.keyword: cache})

    __call__ = forward

    def parameters(self):
        return self.model.parameters()

    def generate(self, input_ids, attention_mask=None, **options):
        """The model's own generate(): the encoder's input as its input, ``input_ids`` as the decoder's prompt."""
        return self.model.generate(**self.fed, decoder_input_ids=input_ids, **options)


def decoder_view(model, case, pad_id, device, repeat=1):
    """``model`` as the paths drive it for ``case``: an encoder-decoder model (or its view over another batch) as
    its :class:`DecoderView` over the case's encoder inputs; anything else (a decoder-only model, a wrapper fuzzkv
    built) as it is."""
    return over_encoder(model, encoder_inputs(case, pad_id, device, repeat))


def over_encoder(model, encoder):
    """``model``'s :class:`DecoderView` over ``encoder`` (ids and mask), where ``model`` is an encoder-decoder model
    or a view of one; ``model`` itself otherwise."""
    model = model.model if encoder is not None and isinstance(model, DecoderView) else model
    if encoder is None or not isinstance(model, transformers.PreTrainedModel) or not model.config.is_encoder_decoder:
        return model
    return DecoderView(model, encoder)


# ---- media: a multimodal model's prompts hold a run of one token where each image (or audio clip) goes ----------
# A model takes one medium: images (a vision-language model) or audio clips (an audio LM: Voxtral, Qwen3-ASR).
# Each is fed the same way: a run of the medium's token per item in the prompt, the items' features on the first
# call only, scattered over those runs in order. fuzzkv's cases call every item an "image"; for an audio LM it is a
# clip. Each medium: the config keys of its encoder, of its token and of the tokens a processor wraps an item in,
# and the model's method that encodes a batch of items.


class Medium(NamedTuple):
    """One medium a multimodal model's prompts hold: its config keys and the method that encodes it."""

    name: str
    towers: tuple
    tokens: tuple
    opens: tuple
    closes: tuple
    encode: str


IMAGE = Medium("image", towers=("vision_config",), tokens=("image_token_id", "image_token_index"),
               opens=("vision_start_token_id", "image_start_token_id", "boi_token_id", "boi_token_index",
                      "image_start_id"),
               closes=("vision_end_token_id", "image_end_token_id", "eoi_token_id", "eoi_token_index", "image_end_id"),
               encode="get_image_features")
AUDIO = Medium("audio", towers=("audio_config", "encoder_config"), tokens=("audio_token_id", "audio_token_index"),
               opens=("audio_bos_token_id", "audio_start_token_id", "boa_token_id"),
               closes=("audio_eos_token_id", "audio_end_token_id", "eoa_token_id"), encode="get_audio_features")
MEDIA = (IMAGE, AUDIO)


def _has_tower(config, kind):
    """Whether ``config`` declares an encoder of the medium ``kind`` (any of its tower keys set)."""
    return any(getattr(config, tower, None) is not None for tower in kind.towers)


def _declared_id(config, names):
    """The first of ``names`` set to a token id on ``config`` or its text config; None where none is."""
    return next((value for level in (config, config.get_text_config()) for name in names
                 if isinstance(value := getattr(level, name, None), int) and not isinstance(value, bool)), None)


def medium(model):
    """The medium ``model``'s prompts hold (its config declares the medium's encoder and token), the first of
    MEDIA; None for a text model."""
    config = getattr(model, "config", None)
    if config is None or config.is_encoder_decoder:
        return None
    return next((m for m in MEDIA if _has_tower(config, m) and _declared_id(config, m.tokens) is not None), None)


def declares_tower(model):
    """Whether ``model``'s config declares an encoder of a medium (a vision or audio tower), token or not, for its
    decoder's prompts (an encoder-decoder's encoder is not one)."""
    return not model.config.is_encoder_decoder and any(_has_tower(model.config, kind) for kind in MEDIA)


def tower_config(model):
    """The config of ``model``'s encoder of its medium."""
    return next(t for name in medium(model).towers if (t := getattr(model.config, name, None)) is not None)


def image_token(model):
    """The id a multimodal model's prompts hold where an image's (or audio clip's) features go; None for any other
    model. A vision-language model whose config declares a tower and no token has none either."""
    kind = medium(model)
    return None if kind is None else _declared_id(model.config, kind.tokens)


def image_edges(model):
    """(opening, closing): the tokens ``model``'s processor wraps each image's (clip's) run of tokens in, each None
    where its config declares none."""
    kind = medium(model)
    return (None, None) if kind is None else tuple(_declared_id(model.config, names) for names in (kind.opens, kind.closes))


# Config keys listing more ids a model embeds as part of an image, not as text (Ovis 2's visual indicators).
IMAGE_MARKER_LISTS = ("visual_indicator_token_ids",)


def image_markers(model):
    """The ids ``model`` embeds as part of an image rather than as text, besides its image token and edges."""
    return tuple(t for name in IMAGE_MARKER_LISTS for t in getattr(model.config, name, None) or ())


def image_ids(model):
    """The ids that stand for an image or its edges (never decoded: the path code gives a decoded one no image)."""
    return [t for t in (image_token(model), *image_edges(model), *image_markers(model)) if t is not None]


def image_runs(row, image_id):
    """(start, end) of each run of ``image_id`` in one row of token ids: one image each (a case never puts two
    images side by side)."""
    flags = (row == image_id).long().tolist()
    runs, start = [], None
    for position, flag in enumerate(flags + [0]):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            runs.append((start, position))
            start = None
    return runs


# A tower of flattened patches (Qwen2-VL and the families built on it) takes an image of any size as its patches
# flattened, with each image's (frames, rows, columns) grid: one frame of 4 x 4 patches, the smallest image whose
# 2 x 2 patch merges it takes whole. Its pixel values: patch count x (channels x frames per patch x patch area).
PATCH_GRID = (1, 4, 4)
PATCH_CHANNELS = ("in_channels", "num_channels", "in_chans")
RGB = 3  # the channels of a tower that declares none (Kimi K2.5, Muse: their patch embedding takes 3)
TEMPORAL_PATCH_NAMES = ("temporal_patch_size", "patch_temporal")  # frames per patch (Muse: patch_temporal)
# Towers whose processor keeps each flattened patch as a small image ([patches, C x frames, P, P]): Kimi K2.5's and
# PaddleOCR-VL's image processors' patchify ("a 4D image instead of flattened 2D seq"), for a Conv2d patch embedding.
PATCHES_AS_IMAGES = ("kimi_k25", "paddleocr_vl")
# Towers whose grid counts image tokens, not patches: their processor cuts one cell of merge x merge patches per
# token, its pixels channels last ([cells, side, side, C]; Inkling 2's image processor _preprocess).
CELLS_PER_TOKEN = ("inkling2", "inkling2_loop")
# VideoLLaMA 3's image processor merges no patches of a still image (its merge_size 1; its video processor's is 2)
STILL_IMAGE_MERGE = 1


def image_features(model):
    """``model``'s own method that encodes its images (``get_image_features``; an audio LM's clips:
    ``get_audio_features``), or its inner model's where the outer class does not pass it on (DeepSeek-VL, Janus:
    their inner forward calls it on the pixel values); None where the forward encodes them inline (Qwen2-Audio:
    modeling_qwen2_audio.py runs its audio tower and projector in its forward)."""
    name = (medium(model) or IMAGE).encode
    return getattr(model, name) if hasattr(model, name) else getattr(model.model, name, None)


def takes_patches(model):
    """Whether ``model``'s tower takes flattened patches with each image's grid (``image_grid_thw``, or
    ``image_grid_hw``: Nemotron-H Omni's)."""
    return any(takes(image_features(model), name) for name in ("image_grid_thw", "image_grid_hw"))


def naflex(model):
    """Whether ``model``'s tower is a NaFlex one (SigLIP 2's, in LFM2-VL): each image its flattened patches, padded
    to a common count, with its (rows, columns) of patches (``spatial_shapes``) and a mask of its real patches."""
    return takes(image_features(model), "spatial_shapes")


def packed(model):
    """Whether ``model`` (MiniCPM-V 4.6 and 4.7, MiniCPM-o OCR: its forward takes ``target_sizes``) takes every
    image's patches packed side by side in one row ([1, C, P, P x all patches]) with each image's (rows, columns)
    of patches, as its image processor packs them (image_processing_minicpmv4_6.py: reshape_by_patch, one cat)."""
    return accepts(model, "target_sizes")


# The keywords under which a model takes each image's grid of patches, with the axes and dtype its processor
# gives: (frames, rows, columns) (Qwen2-VL and the families built on it), (rows, columns) (Nemotron-H Omni's
# image_grid_hw; MiniCPM-V's target_sizes, int32 as image_processing_minicpmv4_6.py makes them).
GRID_KEYWORDS = (("image_grid_thw", PATCH_GRID, torch.long), ("image_grid_hw", PATCH_GRID[1:], torch.long),
                 ("target_sizes", PATCH_GRID[1:], torch.int32))


def image_grids(model, count, device):
    """The keyword giving each of ``count`` images' grid of patches, under the name ``model``'s forward takes."""
    name, grid, dtype = next(keyword for keyword in GRID_KEYWORDS if accepts(model, keyword[0]))
    return {name: torch.tensor([grid] * count, dtype=dtype, device=device)}


def image_pixels(model, preceding):
    """One image's pixel values ([C, H, W], or a tower's flattened patches), drawn from a seed of the real tokens
    before it in its row: a row alone and its place in a batch, the cached path and the uncached one, all see the
    same image. An audio LM's item is an audio clip (:func:`audio_clip`)."""
    if medium(model) is AUDIO:
        return audio_clip(model, preceding)
    tower = model.config.vision_config
    generator = seeded_by(preceding)
    if takes_patches(model) or naflex(model):
        channels = next((getattr(tower, name) for name in PATCH_CHANNELS if getattr(tower, name, None)), RGB)
        frames = next((getattr(tower, name) for name in TEMPORAL_PATCH_NAMES if getattr(tower, name, None)), 1)
        count = PATCH_GRID[0] * PATCH_GRID[1] * PATCH_GRID[2]
        if model.config.model_type in CELLS_PER_TOKEN:
            side = tower.patch_size * tower.spatial_merge_size
            return torch.randn((count, side, side, channels), generator=generator)
        if model.config.model_type in PATCHES_AS_IMAGES:
            return torch.randn((count, channels * frames, tower.patch_size, tower.patch_size), generator=generator)
        return torch.randn((count, channels * frames * tower.patch_size ** 2), generator=generator)
    if packed(model):  # one image's patches side by side: [C, P, P x patches]
        return torch.randn((tower.num_channels, tower.patch_size, tower.patch_size * PATCH_GRID[1] * PATCH_GRID[2]),
                           generator=generator)
    # a tiled model's image: the base image and its tiles, as many as the model's own split of this size makes
    tiles = image_size_to_num_patches(_image_side(tower), model.config.image_grid_pinpoints,
                                      _image_side(tower)[0]) if tiled(model) else None
    return _still_image(tower, generator, tiles)


def _image_side(tower):
    """(height, width) of the images ``tower`` takes."""
    side = tower.image_size
    return (side, side) if isinstance(side, int) else tuple(side)


def _still_image(tower, generator, tiles=None):
    """One image of the size ``tower`` takes ([C, H, W]; [tiles, C, H, W] where it is cut in ``tiles``)."""
    return torch.randn((*([tiles] if tiles else []), getattr(tower, "num_channels", 3), *_image_side(tower)),
                       generator=generator)


# An audio clip: log-mel features [mel bins, frames], every clip the same length and all of it real (a feature
# extractor's clip of that duration), the length its encoder requires: a Whisper-style encoder's fixed window
# (twice its position table: its convolutions halve it), Qwen3-ASR's windows of twice ``n_window`` frames; else
# AUDIO_CLIP_FRAMES. Fed with the mask of its real frames where the forward takes one.
CLIP_FRAMES = (("max_source_positions", 2), ("n_window", 2))
AUDIO_CLIP_FRAMES = 32
AUDIO_BINS = ("num_mel_bins", "feature_size")
AUDIO_MASKS = ("input_features_mask", "feature_attention_mask")
# Masks of each clip's raw samples ([clips, samples]) that a forward also takes for its features (MOSS
# Transcribe-Diarize's padding_mask: its feature extractor reports each clip's raw length so), at the feature
# extractor's hop of HOP_LENGTH samples a frame (feature_extraction_moss_transcribe_diarize.py: hop_length=160).
SAMPLE_MASKS = ("padding_mask",)
HOP_LENGTH = 160


# Towers whose feature extractor stacks consecutive mel frames into one vector and keeps every LFR_STRIDE-th
# stack ("low frame rate"), its clips frames first ([frames, bins x stacked]): Fun-ASR-Nano's
# (feature_extraction_fun_asr_nano.py _apply_lfr, stride_lfr=6). Its clip: AUDIO_CLIP_FRAMES mel frames, so stacked.
STACKED_FRAMES = ("num_stacked_frames",)
LFR_STRIDE = 6


def stacked_frames(tower):
    """The mel frames a tower of config ``tower`` takes stacked in one vector, frames first; None for mel bins by
    frames."""
    return next((getattr(tower, name) for name in STACKED_FRAMES if getattr(tower, name, None)), None)


def clip_frames(tower):
    """The frames of one clip fed to an audio tower of config ``tower``."""
    if stacked_frames(tower):
        return -(-AUDIO_CLIP_FRAMES // LFR_STRIDE)
    return next((factor * getattr(tower, name) for name, factor in CLIP_FRAMES if getattr(tower, name, None)),
                AUDIO_CLIP_FRAMES)


def audio_clip(model, preceding):
    """One audio clip's features, drawn from a seed of the real tokens before it in its row (as an image's)."""
    tower = tower_config(model)
    bins = next(getattr(tower, name) for name in AUDIO_BINS if getattr(tower, name, None))
    stacked = stacked_frames(tower)
    shape = (clip_frames(tower), bins * stacked) if stacked else (bins, clip_frames(tower))
    return torch.randn(shape, generator=seeded_by(preceding, "audio:"))


def clip_tokens(model):
    """The audio tokens one clip takes as its processor counts them: the audio tower's own output length for the
    clip's real frames (``_get_feat_extract_output_lengths``; its last where it returns the lengths after the
    convolutions and after the pooling: processing_qwen2_audio.py and processing_musicflamingo.py count so)."""
    tower = next(module for name, module in model.named_modules() if name.rsplit(".", 1)[-1] == "audio_tower")
    lengths = tower._get_feat_extract_output_lengths(torch.tensor([clip_frames(tower_config(model))]))
    return int((lengths[-1] if isinstance(lengths, tuple) else lengths)[0])


def audio_batch(model, clips, device):
    """The forward keywords that feed ``clips`` (in the order the model scatters their features): their features
    stacked, and the mask of their real frames (all) where the forward takes one."""
    features = torch.stack(clips).to(device=device, dtype=model.dtype)
    masks = [name for name in AUDIO_MASKS if accepts(model, name)][:1]
    samples = [name for name in SAMPLE_MASKS if accepts(model, name)][:1]
    real = torch.ones(features.shape[0], clip_frames(tower_config(model)), dtype=torch.long, device=device)
    return {"input_features": features, **dict.fromkeys(masks, real),
            **dict.fromkeys(samples, real.repeat_interleave(HOP_LENGTH, dim=-1))}


def tiled(model):
    """Whether ``model`` (LLaVA-NeXT and the families built on it) takes each image as its base image and tiles
    (its config's grid pinpoints: the resolutions it tiles an image at)."""
    return getattr(model.config, "image_grid_pinpoints", None) is not None


# Grouped models whose processor marks each row's real images (tiles) in a [rows, images] mask, which the model
# needs to drop the padding ones (Granite Docling's pixel_attention_mask; Idefics 3 finds all-zero ones itself).
REAL_TILE_MASKS = ("granite_docling",)


def nested(model):
    """Whether ``model`` (Idefics 2 and 3, SmolVLM) takes its images grouped per row ([rows, images, C, H, W]); it
    flattens them, dropping all-zero padding images, and scatters their features in order, so one group holds
    them all."""
    return takes(image_features(model), "pixel_attention_mask")


def image_batch(model, rows, device):
    """The forward keywords that feed the images of ``rows`` (each row's list of :func:`image_pixels`, in the order
    the model scatters their features over its image tokens), as a processor lays them out: pixel values (every
    image in order; per row, padded with all-zero images, where the model groups them), and each image's grid or
    size where the tower takes it."""
    images = [image for row in rows for image in row]
    if medium(model) is AUDIO:
        return audio_batch(model, images, device)
    if takes_patches(model):
        patches = {"pixel_values": torch.cat(images).to(device=device, dtype=model.dtype),
                   **image_grids(model, len(images), device)}
        if accepts(model, "image_merge_sizes"):  # VideoLLaMA 3: each image's patch merge, as its processor gives it
            patches["image_merge_sizes"] = torch.tensor([STILL_IMAGE_MERGE] * len(images), device=device)
        return patches
    if packed(model):
        return {"pixel_values": torch.cat(images, dim=-1)[None].to(device=device, dtype=model.dtype),
                **image_grids(model, len(images), device)}
    if naflex(model):  # one size for every image: none padded, every patch real
        values = torch.stack(images).to(device=device, dtype=model.dtype)
        return {"pixel_values": values,
                "pixel_attention_mask": torch.ones(values.shape[:2], dtype=torch.int32, device=device),
                "spatial_shapes": torch.tensor([PATCH_GRID[1:]] * len(images), device=device)}
    if nested(model):
        most = max(len(row) for row in rows)
        blank = torch.zeros_like(images[0])
        groups = [torch.stack(row + [blank] * (most - len(row))) for row in rows]
        grouped = {"pixel_values": torch.stack(groups).to(device=device, dtype=model.dtype)}
        if model.config.model_type in REAL_TILE_MASKS:
            real = [[True] * len(row) + [False] * (most - len(row)) for row in rows]
            grouped["pixel_attention_mask"] = torch.tensor(real, device=device)
        return grouped
    values = torch.stack(images).to(device=device, dtype=model.dtype)
    if not takes(image_features(model), "image_sizes"):
        return {"pixel_values": values}
    sizes = torch.tensor([list(values.shape[-2:])] * len(values), device=device)  # each image's own size
    return {"pixel_values": values, "image_sizes": sizes}


def image_inputs(model, tokens, mask, start, end):
    """The forward keywords that feed the images whose runs lie in ``tokens[:, start:end]`` (rows in order, as the
    model scatters their features over its image tokens), as generate() feeds a processor's (:func:`image_batch`),
    and a token-type map (1 on image tokens) where the forward takes one (of the whole sequence so far). Empty when
    the span holds no image."""
    image_id = image_token(model)
    if image_id is None:
        return {}
    rows = []
    for row, real in zip(tokens, mask.bool()):
        kept = row[:end][real[:end]]  # the row's real tokens up to the span's end, without padding
        offset = int((~real[:start]).sum())  # padding before the span: positions in ``kept`` shift by it
        rows.append([image_pixels(model, kept[:first].tolist()) for first, _ in image_runs(kept, image_id)
                     if first >= start - offset])
    # The token-type map (1 on image tokens) from the start of the sequence: Gemma 3's and 4's bidirectional image
    # masks read it by position (their prepare_inputs_for_generation gives a prefill chunk all of it); M-RoPE
    # models read it to place each image's 3-D positions.
    types = "mm_token_type_ids" if accepts(model, "mm_token_type_ids") else \
        "token_type_ids" if model.config.model_type in IMAGE_TOKEN_TYPES else None
    extra = {types: (tokens[:, :end] == image_id).long()} if types and accepts(model, types) else {}
    return {**extra, **image_batch(model, rows, tokens.device)} if any(rows) else extra


@torch.inference_mode()
def tokens_per_image(model, images=None):
    """How many image tokens one image takes: the features the model's tower and projector give one image
    (``images``' keywords, else one :func:`image_pixels`), in text-width vectors (the count the model checks its
    image tokens against)."""
    images = images or image_batch(model, [[image_pixels(model, [])]], model.device)
    encode = image_features(model)
    if encode is None:  # a forward that encodes its clips inline checks them against the processor's count
        return clip_tokens(model)
    if takes(encode, "input_ids"):  # MusicFlamingo times a clip's features by its run of tokens in the prompt
        images["input_ids"] = torch.full((1, clip_tokens(model)), image_token(model), device=model.device)
    features = encode(**images)
    width = model.config.get_text_config().hidden_size
    if _feature_width(features) != width:  # the model scatters by value count: a layout no processor makes
        raise ValueError(f"its {medium(model).name} features are {_feature_width(features)} wide, its text {width}")
    return _feature_count(features) // width


# ---- M-RoPE: Qwen2-VL and the families built on it give an image's tokens 3-D positions ------------------------


def rope_index_keeper(model):
    """The inner model of a Qwen2-VL-style model: it computes M-RoPE positions (``get_rope_index``: each image's
    tokens take (frame, row, column) positions, the text after an image is shifted by the image's extent) and keeps
    that shift between calls (``rope_deltas``); None for any other model."""
    inner = getattr(model, "model", None)
    return inner if hasattr(inner, "get_rope_index") and hasattr(inner, "rope_deltas") else None


def mrope_positions(keeper, model, tokens, mask):
    """The M-RoPE position ids of the whole sequence ``tokens`` ([3, B, T]: the frame, row and column axes; each
    family takes these three), from the model's own ``get_rope_index`` (its shift kept on the model, as generate's
    ``_prepare_position_ids_for_generation`` keeps it), and where the last image's run ends (0 without images).
    A token's positions depend only on the tokens before it, so any prefix's are these."""
    image_id = image_token(model)
    text = positions_from_mask(mask)
    runs = [run for row, real in zip(tokens, mask.bool()) for run in image_runs(row[real], image_id)]
    if not runs:  # text alone: generate() gives it its text positions on every axis, and no shift
        keeper.rope_deltas = torch.zeros_like(text[:, :1])
        return text[None].expand(3, -1, -1), 0
    # The token-type map where get_rope_index takes one; Qwen2.5-Omni's and Qwen3-Omni's find the image token in
    # input_ids themselves (as their generate() calls them: ids, grids and mask only).
    types = {"mm_token_type_ids": (tokens == image_id).long()} if takes(keeper.get_rope_index, "mm_token_type_ids") \
        else {}
    spatial, keeper.rope_deltas = keeper.get_rope_index(
        input_ids=tokens, attention_mask=mask, **image_grids(model, len(runs), tokens.device), **types)
    return spatial.to(text.device), int((tokens == image_id).nonzero()[:, 1].max()) + 1


def _feature_width(features):
    """The width of the vectors get_image_features returns (a tensor's last dimension, a list's first part's)."""
    if isinstance(features, torch.Tensor):
        return features.shape[-1]
    if isinstance(features, (list, tuple)):
        return _feature_width(features[0])
    pooled = getattr(features, "pooler_output", None)
    return _feature_width(pooled if pooled is not None else features.last_hidden_state)


def _feature_count(features):
    """The number of values in what get_image_features returns: a tensor, a list of them, or a model output."""
    if isinstance(features, torch.Tensor):
        return features.numel()
    if isinstance(features, (list, tuple)):
        return sum(_feature_count(part) for part in features)
    pooled = getattr(features, "pooler_output", None)
    return _feature_count(pooled if pooled is not None else features.last_hidden_state)


# Models whose forward reads ``token_type_ids`` as 1 on image tokens (Gemma 3: the image's tokens attend to each
# other both ways); PaliGemma reads them as its prefix-LM's prefix and suffix instead, and is given none. A forward
# that takes ``mm_token_type_ids`` (Gemma 4) is given those, with the same meaning.
IMAGE_TOKEN_TYPES = ("gemma3", "shieldgemma2")


def static_cache_sized_by_batch():
    """Whether the installed StaticCache is allocated for a batch size, on a device, in a dtype (transformers before
    4.56; later it allocates on first use). Its forward calls are then given their cache positions explicitly."""
    return takes(StaticCache.__init__, "batch_size") or takes(StaticCache.__init__, "max_batch_size")


def new_cache(model, kind, max_len, settings=None, batch=None):
    """A fresh cache of ``kind``: a StaticCache of ``max_len`` slots (for ``batch`` rows, where the release sizes it
    so), an offloaded DynamicCache, a QuantizedCache with the case's ``settings`` (see :func:`quantized_options`),
    or a DynamicCache.

    transformers 4.x builds a DynamicCache without a config, and some of its models take only
    legacy tuples (None to start). An encoder-decoder model's (a :class:`DecoderView`) is an EncoderDecoderCache
    of that self-attention cache and a cross-attention cache, static (the encoder's length) beside a static one,
    as generate() builds them.
    """
    if isinstance(model, DecoderView):
        # a static cross-attention cache holds the encoder's output (an audio encoder's is shorter than its input)
        cross = StaticCache(config=model.config, max_cache_len=model.encoded().last_hidden_state.shape[1]) \
            if kind == "static" else DynamicCache(config=model.config)
        return EncoderDecoderCache(new_cache(model.model, kind, max_len, settings, batch), cross)
    if kind == "static" and static_cache_sized_by_batch():
        rows = "batch_size" if takes(StaticCache.__init__, "batch_size") else "max_batch_size"
        parameter = next(model.parameters())
        return StaticCache(config=model.config, max_cache_len=max_len, device=parameter.device,
                           dtype=parameter.dtype, **{rows: batch})
    if kind == "static":
        return StaticCache(config=model.config, max_cache_len=max_len)
    if kind == "quantized":
        from transformers import QuantizedCache

        return QuantizedCache(config=model.config, **quantized_options(settings or {}))
    if kind == "offloaded":  # a DynamicCache that keeps layers on the CPU between uses (transformers 5.x, CUDA)
        return DynamicCache(config=model.config, offloading=True)
    if takes(DynamicCache.__init__, "config"):
        return DynamicCache(config=model.config)
    return DynamicCache() if getattr(model, "_supports_cache_class", False) else None


# The case settings a QuantizedCache takes, under its own names ("quantizer" is its ``backend``).
QUANTIZED_OPTIONS = ("nbits", "axis_key", "axis_value", "q_group_size", "residual_length")


def quantized_options(settings):
    """QuantizedCache's keyword arguments (also generate()'s ``cache_config``) from a case's settings."""
    options = {name: settings[name] for name in QUANTIZED_OPTIONS if name in settings}
    return {"backend": settings.get("quantizer", "quanto"), **options}


def quantizers():
    """The QuantizedCache backends this installation can run: FP8 where transformers has it (5.24), quanto and
    HQQ where their packages are installed (transformers' own availability checks)."""
    from transformers import cache_utils
    from transformers.utils import is_hqq_available, is_optimum_quanto_available

    names = ["quanto"] if is_optimum_quanto_available() else []
    names += ["hqq"] if is_hqq_available() else []
    names += ["fp8"] if "Fp8QuantizedLayer" in vars(cache_utils) else []
    return tuple(names)


# Pure state-space models whose own generate() drops the attention mask after the first step
# (transformers' prepare_inputs_for_generation in modeling_mamba.py, modeling_mamba2.py and
# modeling_falcon_mamba.py): a mask they are given must cover the tokens of this call only, not the
# cached ones (they multiply the current hidden states by it).
MASK_OF_CURRENT_TOKENS = ("mamba", "mamba2", "falcon_mamba")


# ALiBi models build their position bias from the 2-D mask, whose length must then be the static
# cache's key length (bloom's and falcon's build_alibi_tensor); every other model is given the mask of
# the tokens so far, as generate() gives it, and builds the static cache's mask itself.
MASK_AS_LONG_AS_STATIC_CACHE = ("bloom", "falcon", "mpt")

# Models whose forward slices the cached prefix off by itself, so each cached step is given the whole
# sequence so far (transformers' modeling_cpmant.py, prepare_inputs_for_generation: "forward slices off
# the cached prefix itself, so it needs the full input_ids"). They take no mask and no positions.
WHOLE_SEQUENCE_WHEN_CACHED = ("cpmant",)

# Models whose forward takes no position ids and numbers absolute positions from the cache length
# (modeling_trocr.py: TrOCRLearnedPositionalEmbedding gets the past length, never the mask), so a left-padded
# row is shifted by its padding in every path, uncached and generate() alike: the library gives no way to
# batch rows of different lengths, and the batch oracle does not apply. The reason is reported.
POSITIONS_FROM_CACHE_LENGTH = {
    "trocr": "TrOCR's decoder takes no position ids and counts positions from the cache length "
             "(modeling_trocr.py TrOCRLearnedPositionalEmbedding), so a left-padded row is shifted by its padding "
             "in every path, generate() included",
}

# Models for which transformers builds a StaticCache from the config but whose forward cannot use one, with
# the reason fuzzkv reports for the static-cache oracles it skips. Nothing in the library claims they can.
NO_STATIC_CACHE = {
    "cpmant": "CPM-Ant's forward handles a growing cache only: it prepends `prompt_length` tokens a static cache "
              "is not sized for and sizes its mask and position bias to the tokens so far (its generate() with "
              "cache_implementation='static' raises IndexError too; no static-cache support is declared)",
}


# Models whose generate() with beam search returns step scores the beam oracle cannot pair with a returned sequence,
# with the reason fuzzkv reports for it.
NO_BEAM_SCORES = {
    "whisper": "Whisper's own generate() (WhisperGenerationMixin) returns each returned sequence's step logits, not "
               "the running beams' that its beam_indices point into, so a returned sequence's scores cannot be found",
}


class CachedForward:
    """One cached forward over ``tokens[:, start:start+size]``: the step the cached path repeats."""

    def __init__(self, model, full_mask, cache, static_len=None):
        self.model, self.full_mask, self.cache, self.static_len = model, full_mask, cache, static_len
        self.positions = positions_from_mask(full_mask)
        self.keyword = cache_keyword(model)
        # MPT on transformers 4.x takes no position_ids (its ALiBi counts positions itself).
        self.with_positions = accepts(model, "position_ids")
        self.rope_keeper = rope_index_keeper(model)
        self.spatial, self.last_image_end = torch.empty(0, dtype=torch.long), 0  # M-RoPE: set by the first call
        self.current_tokens_mask = model.config.model_type in MASK_OF_CURRENT_TOKENS
        self.whole_sequence = model.config.model_type in WHOLE_SEQUENCE_WHEN_CACHED
        self.mask_to_cache_length = model.config.model_type in MASK_AS_LONG_AS_STATIC_CACHE
        # A StaticCache allocated up front (before 4.56) takes the slots to write as cache positions, as generate()
        # gives them; later releases (and every other cache) count them from the cache itself.
        self.cache_positions = static_len is not None and static_cache_sized_by_batch() and \
            accepts(model, "cache_position")

    def __call__(self, tokens, start, size):
        end = start + size
        if self.whole_sequence:
            out = self.model(input_ids=tokens[:, :end], use_cache=True, **{self.keyword: self.cache})
            self.cache = returned_cache(out)
            return out.logits[:, -size:]
        if self.current_tokens_mask:
            attention = self.full_mask[:, start:end]
        else:
            attention = self.full_mask[:, :end]
        if self.static_len is not None and self.mask_to_cache_length:
            # ALiBi models (bloom, falcon) need the 2-D mask as long as the static cache.
            attention = torch.nn.functional.pad(attention, (0, self.static_len - end))
        extra = {"position_ids": self.positions[:, start:end]} if self.with_positions else {}
        if self.rope_keeper is not None:
            extra["position_ids"] = self.mrope(tokens, start, end)
        extra.update(image_inputs(self.model, tokens, self.full_mask, start, end))
        if self.cache_positions:
            extra["cache_position"] = torch.arange(start, end, device=tokens.device)
        out = self.model(input_ids=tokens[:, start:end], attention_mask=attention, use_cache=True,
                         **{self.keyword: self.cache}, **extra)
        self.cache = returned_cache(out)  # the same object in 5.x; new legacy tuples in some 4.x models
        return out.logits

    def mrope(self, tokens, start, end):
        """An M-RoPE model's positions for ``tokens[:, start:end]``: up to the last image, the sequence's own
        (:func:`mrope_positions`, computed on the first call); after it, the text positions shifted by the shift the
        model kept (as its forward shifts a cached step's). So a model that loses its shift between steps parts
        from the one uncached pass."""
        if start == 0:
            self.spatial, self.last_image_end = mrope_positions(self.rope_keeper, self.model, tokens, self.full_mask)
        if start < self.last_image_end:
            return self.spatial[:, :, start:end]
        text = self.positions[:, start:end]
        return (text + self.rope_keeper.rope_deltas.to(text.device))[None].expand(3, -1, -1)


def prefill_and_decode(ids, full_mask, chunks, forced, step, banned=None):
    """Prefill ``ids`` in ``chunks``, then decode one token at a time; returns (tokens, logits).

    ``step(tokens, start, size)`` runs the model on ``tokens[:, start:start+size]`` with its
    cache and returns those positions' logits. Greedy unless ``forced`` gives the full
    sequence to feed (teacher forcing, so two paths compare position by position).
    """
    prompt_length, total = ids.shape[1], full_mask.shape[1]
    tokens = torch.cat([ids, torch.zeros_like(full_mask[:, prompt_length:])], dim=1)
    if forced is not None:
        tokens = forced.to(ids.device).clone()
    step_logits, start = [], 0
    for size in chunks:
        step_logits.append(step(tokens, start, size))
        start += size
    for pos in range(prompt_length, total):
        if forced is None:
            last = step_logits[-1][:, -1]
            if banned:  # an image token decoded would stand for an image no path was given
                last = last.clone()
                last[:, banned] = float("-inf")
            tokens[:, pos] = last.argmax(-1)
        if pos < total - 1:
            step_logits.append(step(tokens, pos, 1))
    logits = torch.cat(step_logits, dim=1)
    return tokens, logits if logits.dtype == torch.float64 else logits.float()


@torch.inference_mode()
def cached(model, case, pad_id, device, kind=None, chunks=None, forced=None, cache=None):
    """The cached path: prefill ``case`` in its chunks into ``cache`` (a fresh one of ``kind`` by
    default), then decode: greedily, or feeding the case's drawn ``continuation``, unless ``forced``
    gives the whole sequence. Returns (tokens [B, T], mask [B, T], logits [B, T-1, V] float32)."""
    kind = kind or case["cache"]
    model = decoder_view(model, case, pad_id, device)
    ids, mask = padded(case, pad_id, device)
    total = mask.shape[1]
    store = cache if cache is not None else new_cache(model, kind, total, case.get("settings"), len(ids))
    step = CachedForward(model, mask, store, total if kind == "static" else None)
    tokens, logits = prefill_and_decode(ids, mask, chunks or case["prefill_chunks"], fed(case, ids, forced), step,
                                        image_ids(model))
    return tokens, mask, logits


def fed(case, ids, forced):
    """The whole sequence a cached path feeds: ``forced``, else the prompts ``ids`` and the case's drawn
    ``continuation``; None (greedy) when the case has neither."""
    if forced is None and case.get("continuation"):
        return torch.cat([ids, torch.tensor(case["continuation"], dtype=torch.long, device=ids.device)], dim=1)
    return forced


def reuse_primer(case):
    """The batch a reused cache serves first: ``case["reuse_batch"]`` rows (at least the case's), cycling through
    its prompts, prefilled in one pass, decoded greedily."""
    cycled = range(max(case["reuse_batch"], len(case["prompts"])))
    rows = [case["prompts"][i % len(case["prompts"])] for i in cycled]
    encoder = {"encoder": [case["encoder"][i % len(case["encoder"])] for i in cycled]} if case.get("encoder") else {}
    return dict(case, prompts=rows, prefill_chunks=[max(len(p) for p in rows)], continuation=[], **encoder)


@torch.inference_mode()
def reused(model, case, pad_id, device, forced):
    """The cached path on a cache first used for ``case["reuse_batch"]`` rows, then ``reset()``."""
    primer = reuse_primer(case)
    total = max(len(p) for p in case["prompts"]) + case["max_new_tokens"]
    shared = new_cache(decoder_view(model, primer, pad_id, device), case["cache"], total, batch=len(primer["prompts"]))
    cached(model, primer, pad_id, device, cache=shared)
    shared.reset()  # the contract under test: a reset cache behaves like a fresh one
    return cached(model, case, pad_id, device, forced=forced, cache=shared)


@torch.inference_mode()
def reference(model, tokens, mask, encoder=None):
    """Uncached logits from ONE teacher-forced forward pass over ``tokens``: [B, T-1, V]. ``encoder``: an
    encoder-decoder model's encoder ids and mask (see :func:`encoder_inputs`); ``tokens`` are then its decoder's."""
    model = over_encoder(model, encoder)
    inputs, attention = tokens[:, :-1], mask[:, :-1]
    # An M-RoPE model places its positions itself in one pass (from the token-type map and the images' grids).
    with_positions = accepts(model, "position_ids") and rope_index_keeper(model) is None
    extra = {"position_ids": positions_from_mask(attention)} if with_positions else {}
    extra.update(image_inputs(model, inputs, attention, 0, inputs.shape[1]))
    return model(input_ids=inputs, attention_mask=attention, use_cache=False, **extra).logits


@torch.inference_mode()
def generate(model, case, pad_id, device, cache_implementation=None):
    """The library's own ``generate``, greedy, with each step's logits (the prompt prefilled in pieces of
    ``case["settings"]["prefill_chunk_size"]`` tokens where that is set). Returns (sequences, mask, step logits)."""
    model = decoder_view(model, case, pad_id, device)
    ids, mask = padded(case, pad_id, device)
    n = case["max_new_tokens"]
    extra = {"cache_implementation": cache_implementation} if cache_implementation else {}
    if cache_implementation == "quantized":
        extra["cache_config"] = quantized_options(case.get("settings", {}))
    chunk = case.get("settings", {}).get("prefill_chunk_size")
    if chunk:  # the prompt prefilled in pieces of this many tokens (the prefix-reuse oracle's chunked generate)
        extra["prefill_chunk_size"] = chunk
    forget_earlier_generates(model)
    return _greedy_generate(model, ids, mask, n, pad_id, **extra)


def forget_earlier_generates(model):
    """Drop what generate() keeps on a model between calls, so a case's result never depends on the cases before
    it and its reproduction script (a fresh model) reproduces it: the largest static cache it sized (5.x's
    _previous_max_cache_length, kept to avoid recompiling) and the static cache itself (4.5x's _cache, reused
    when it fits)."""
    model = model.model if isinstance(model, DecoderView) else model
    model.__dict__.pop("_previous_max_cache_length", None)
    model.__dict__.pop("_cache", None)


def _greedy_generate(model, ids, mask, n, pad_id, **extra):
    """``generate()`` greedy for exactly ``n`` new tokens, returning each step's logits: (sequences, mask, logits).
    A vision-language model is given the prompt's images, and never decodes its image token."""
    extra.update(prompt_images(model, ids, mask))
    out = model.generate(input_ids=ids, attention_mask=mask[:, :ids.shape[1]], max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, num_beams=1, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=pad_id, **extra)
    static_cache_in_effect(extra.get("cache_implementation"), out)
    return out.sequences, mask, list(out.logits)


# Compiled decoding: one static cache length per bucket of this many positions, so that cases of different lengths
# reuse the graphs torch.compile built for the first (it recompiles per cache length; batch sizes become dynamic
# after the first change). The compile settings are one object, so generate() keeps its compiled call.
COMPILED_CACHE_BUCKET = 64
_COMPILE_CONFIG: list = []


def compile_config():
    """transformers' CompileConfig with its defaults, told to compile on every device: generate() compiles only on
    accelerators otherwise (``_valid_auto_compile_criteria`` in transformers 5.24 generation/utils.py:2450)."""
    if not _COMPILE_CONFIG:
        from transformers.generation import CompileConfig

        config = CompileConfig()
        config._compile_all_devices = True  # type: ignore[assignment]  # declared None, read as a flag
        _COMPILE_CONFIG.append(config)
    return _COMPILE_CONFIG[0]


@torch.inference_mode()
def compiled_generate(model, case, pad_id, device):
    """The library's own compiled decoding: ``generate()`` on a StaticCache (its length rounded up to a bucket), with
    its decoding steps ``torch.compile``d, greedy, with each step's logits. Returns (sequences, mask, step logits)."""
    ids, mask = padded(case, pad_id, device)
    length = -(-mask.shape[1] // COMPILED_CACHE_BUCKET) * COMPILED_CACHE_BUCKET
    cache = StaticCache(config=model.config, max_cache_len=length)
    keyword = cache_keyword(model)  # generate() takes the cache under the forward's name (5.24: cache=)
    generated = _greedy_generate(model, ids, mask, case["max_new_tokens"], pad_id, compile_config=compile_config(),
                                 **{keyword: cache})
    compiled_in_effect(model)
    return generated


def compiled_in_effect(model):
    """Raise SettingIgnored where generate() was given a compile config and ran its steps uncompiled: transformers
    compiles only where its criteria allow (a quantizer, a cache it cannot compile), and keeps the compiled forward
    on the model (``_compiled_call``) once it did."""
    if "_compiled_call" not in vars(model):
        raise SettingIgnored(f"generate(compile_config=...) ran its decoding steps uncompiled: transformers "
                             f"{transformers.__version__} took the setting and did not compile")


def prompt_images(model, ids, mask):
    """generate()'s keywords for the images of the prompt ``ids`` (it feeds them on its first step), and the image
    token suppressed (its raw logits, which the paths compare, are unchanged), as the cached path bans it: in a
    prompt without images too, where one decoded would be given an image by the uncached reference."""
    images = image_inputs(model, ids, mask[:, :ids.shape[1]], 0, ids.shape[1])
    banned = image_ids(model)
    return {**images, "suppress_tokens": banned} if banned else images


@torch.inference_mode()
def beam_search(model, case, pad_id, device, cache_implementation=None):
    """The library's ``generate`` with beam search: the cache is reordered every step as beams are kept and
    dropped. Returns (sequences [B*R, T], mask [B*R, T], step logits [B*R, V] per step), where the logits of a
    returned sequence at each step are the ones its beam was scored with (found through ``beam_indices``)."""
    model = decoder_view(model, case, pad_id, device)
    ids, mask = padded(case, pad_id, device)
    n, settings = case["max_new_tokens"], case["settings"]
    returned = settings["num_return_sequences"]
    extra = {"cache_implementation": cache_implementation} if cache_implementation else {}
    forget_earlier_generates(model)
    out = model.generate(input_ids=ids, attention_mask=mask[:, :ids.shape[1]], max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, num_beams=settings["num_beams"], num_return_sequences=returned,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=pad_id, **extra,
                         **prompt_images(model, ids, mask))
    static_cache_in_effect(cache_implementation, out)
    running = torch.stack(list(out.logits), 1)  # [B*beams, n, V]: every running beam's logits at every step
    beams = out.beam_indices[:, :n].long()  # the running beam each returned sequence was at, per step
    # -1: no index given. transformers 5.25 gives it to an encoder-decoder model's second returned sequence after
    # one new token; its row's first running beam stands in (at the first step every beam of a row holds the prompt,
    # so any has its scores). Never another row's beam (clamping to 0 paired it with the first row's: a false alarm).
    first_of_row = (torch.arange(len(beams), device=beams.device) // returned * settings["num_beams"])[:, None]
    beams = torch.where(beams >= 0, beams, first_of_row)
    per_sequence = running[beams, torch.arange(n, device=running.device)]
    return out.sequences, mask.repeat_interleave(returned, 0), list(per_sequence.unbind(1))


def draft_model(model, seed=0):
    """A draft for assisted decoding: ``model`` with its output head perturbed by its own spread (seeded), so its
    guesses are often wrong and rejected, and the target's cache is cropped back across draft windows."""
    draft = copy.deepcopy(model)
    head = draft.get_output_embeddings().weight
    noise = torch.randn(head.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        head.add_((noise * head.double().std()).to(device=head.device, dtype=head.dtype))
    return draft


@torch.inference_mode()
def assisted(model, case, pad_id, device, draft, cache_implementation=None):
    """The library's ``generate`` with assisted decoding (``case["settings"]``: drafter "draft" or
    "prompt-lookup", draft_tokens per window), greedy, with each step's logits; as :func:`generate` returns."""
    ids, mask = padded(case, pad_id, device)
    n, settings = case["max_new_tokens"], case["settings"]
    extra = {"cache_implementation": cache_implementation} if cache_implementation else {}
    if settings["drafter"] == "prompt-lookup":
        extra["prompt_lookup_num_tokens"] = settings["draft_tokens"]
    else:
        # The draft's own generation config governs its window; a confidence threshold of 0 keeps it drafting
        # (the default, 0.4, stops a poor draft after one token), and a constant schedule keeps the window.
        draft.generation_config.num_assistant_tokens = settings["draft_tokens"]
        draft.generation_config.assistant_confidence_threshold = 0.0
        draft.generation_config.num_assistant_tokens_schedule = "constant"
        extra["assistant_model"] = draft
    forget_earlier_generates(model)
    out = model.generate(input_ids=ids, attention_mask=mask[:, :ids.shape[1]], max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, output_logits=True, return_dict_in_generate=True, pad_token_id=pad_id,
                         **extra)
    static_cache_in_effect(extra.get("cache_implementation"), out)
    return out.sequences, mask, list(out.logits)


def crop_to(cache, length):
    """Crop ``cache`` to its first ``length`` positions: transformers 5.24's ``crop`` takes the number of tokens
    to remove (negative), earlier releases the length to keep."""
    if takes(cache.crop, "tokens_to_remove"):
        cache.crop(length - int(cache.get_seq_length()))
    else:
        cache.crop(length)


def croppable(cache):
    """Whether the library says ``crop`` can put ``cache`` back as it was (``Cache.is_croppable``, transformers
    5.24; earlier releases say nothing, and fuzzkv holds them to the crop they offer)."""
    return bool(cache.is_croppable) if transformers_release() >= CROP_PROTOCOL_SINCE else True


def _prefix_cache(model, ids, mask, kind, total, prefix, operation, settings=None):
    """A cache holding the first ``prefix`` positions of ``ids`` after ``operation``, and those positions'
    logits (as computed when the cache was filled)."""
    static_len = total if kind == "static" else None
    rows = ids.shape[0]
    if operation == "select":  # prefilled beside other rows, which are then dropped
        others = (ids + 1) % model.config.get_text_config().vocab_size
        both = CachedForward(model, torch.cat([mask, mask]), new_cache(model, kind, total, settings), static_len)
        logits = both(torch.cat([ids, others]), 0, prefix)[:rows]
        both.cache.batch_select_indices(torch.arange(rows, device=ids.device))
        return both.cache, logits
    if operation == "reorder":  # prefilled with the rows reversed, then put back in order
        order = torch.arange(rows - 1, -1, -1, device=ids.device)
        reversed_rows = CachedForward(model, mask[order], new_cache(model, kind, total, settings), static_len)
        logits = reversed_rows(ids[order], 0, prefix)[order]
        reversed_rows.cache.reorder_cache(order)
        return reversed_rows.cache, logits
    original = CachedForward(model, mask, new_cache(model, kind, total, settings), static_len)
    if operation == "crop":  # the whole prompt prefilled, then cropped back to the prefix
        # transformers 5.24: a sliding-window layer keeps what a crop needs only once told to, as assisted
        # decoding does ("Call `activate_past_recording` before `crop`"); earlier releases have no such call.
        if transformers_release() >= CROP_PROTOCOL_SINCE:
            original.cache.activate_past_recording()
        logits = original(ids, 0, ids.shape[1])[:, :prefix]
        if croppable(original.cache):
            crop_to(original.cache, prefix)
            return original.cache, logits
        # The library says this cache cannot be put back by a crop (a recurrent state, a window already
        # slid past): the case is run as "copy" instead.
        original = CachedForward(model, mask, new_cache(model, kind, total, settings), static_len)
    # copy: a deep copy of the prefix cache; the original is then continued with the rest of the prompt, which
    # must leave the copy as it was
    logits = original(ids, 0, prefix)
    duplicate = copy.deepcopy(original.cache)
    original(ids, prefix, ids.shape[1] - prefix)
    return duplicate, logits


@torch.inference_mode()
def prefix_reused(model, case, pad_id, device, forced, operation):
    """The cached path continued from a prefix cache that went through ``operation`` ("copy", "crop", "select"
    or "reorder") instead of a fresh prefill; the prefix is the case's first prefill chunk, the rest is
    fed as the case's other chunks, then ``forced`` is decoded. Returns (tokens, mask, logits) like ``cached``."""
    ids, mask = padded(case, pad_id, device)
    total, chunks = mask.shape[1], case["prefill_chunks"]
    store, prefix_logits = _prefix_cache(model, ids, mask, case["cache"], total, chunks[0], operation,
                                         case.get("settings"))
    step = CachedForward(model, mask, store, total if case["cache"] == "static" else None)

    def resumed(tokens, start, size):
        return prefix_logits if start == 0 else step(tokens, start, size)

    tokens, logits = prefill_and_decode(ids, mask, chunks, forced, resumed)
    return tokens, mask, logits


@torch.inference_mode()
def continuous_batching(model, case, pad_id, device):
    """transformers' continuous batching (``generate_batch``: a paged cache, requests scheduled into shared
    batches) on each prompt as its own request, greedy, under the case's paged-cache settings. Returns (tokens
    [B, T] left-padded like ``cached``, mask [B, T], the log-prob of each generated token [B, new])."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    settings, n = case["settings"], case["max_new_tokens"]
    ids, mask = padded(case, pad_id, device)
    generation = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=-1, pad_token_id=pad_id)
    paged = ContinuousBatchingConfig(page_size=settings["page_size"], num_blocks=settings["num_blocks"],
                                     max_batch_tokens=settings["max_batch_tokens"],
                                     max_requests_per_batch=settings["max_requests_per_batch"],
                                     allow_block_sharing=bool(settings["block_sharing"]), return_logprobs=True,
                                     use_cuda_graph=False)
    results = model.generate_batch([list(p) for p in case["prompts"]], generation_config=generation,
                                   continuous_batching_config=paged, warmup=False)
    outputs = [results[f"req_{row}"] for row in range(len(case["prompts"]))]
    for output in outputs:
        if output.error or len(output.generated_tokens) != n:
            raise RuntimeError(f"request {output.request_id} ended with {len(output.generated_tokens)} of {n} tokens"
                               f" ({output.error or output.status})")
    generated = torch.tensor([o.generated_tokens for o in outputs], dtype=torch.long, device=ids.device)
    logprobs = torch.tensor([o.logprobs for o in outputs], dtype=torch.float64)
    return torch.cat([ids, generated], 1), mask, logprobs


def rms_difference(reference_logits, candidate_logits, checked):
    """The largest root-mean-square logit difference over the vocabulary at any ``checked`` position.
    A cache bug moves the whole distribution; rounding moves a few logits by a little."""
    diff = (reference_logits.double() - candidate_logits.double()).nan_to_num(nan=float("inf"))
    return float(diff.pow(2).mean(-1).sqrt().masked_fill(~checked, 0).max())


def max_difference(reference_logits, candidate_logits, checked):
    """The largest |logit difference| over the ``checked`` [B, T] positions (NaN counts as infinite)."""
    diff = (reference_logits.double() - candidate_logits.double()).abs()
    return float(diff.nan_to_num(nan=float("inf")).amax(-1).masked_fill(~checked, 0).max())
