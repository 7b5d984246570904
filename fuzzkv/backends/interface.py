"""The backend interface: the only thing the runner, replay and reports know about backends.

A :class:`Backend` owns one loaded model and runs the paths oracles compare (the cached
path, the uncached reference, cache reuse, the library's own ``generate``); every path
returns a :class:`Trace`. What a backend can do is declared as data in its
:class:`Capabilities`, never probed; optional operations have defaults here.

A :class:`Lane` is what an oracle runs on: one backend, or a pair of backends compared by
the ``cross`` oracle. The lane owns the rules that differ between the two: how its
tolerance is settled, how a failure is localised, and its reproduction script.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from fuzzkv.case import DRAWN_CACHES, DTYPES, Case, wrapped_image

if TYPE_CHECKING:
    import torch

    from fuzzkv.verdict import Bounds, Tolerance, Verdict


@dataclass(frozen=True)
class ModelInfo:
    """What strategies and reports need to know about the model under test."""

    name: str
    architecture: str
    vocab_size: int
    special_ids: tuple[int, ...]
    max_positions: int | None
    sliding_windows: tuple[int, ...]
    source: str
    model_type: str = ""  # the transformers model_type, where there is one (the sweep's expected table keys on it)
    head_dim: int | None = None  # the width of one attention head (a quantized cache's groups must divide it)
    # Built at the run's --scale (a registry name or a model type); False: it came at its own size (a folder, a GGUF
    # file, a hub id, a factory or an object), which --scale does not change.
    scaled: bool = True
    # Seeded random weights: no token is special in them (a trained model's special tokens can carry activations far
    # larger than others', which calibration measures on).
    random_weights: bool = False
    # An encoder-decoder model: cases carry encoder inputs, and the decoder's prompts are of one length per batch,
    # each starting with the token its decoding starts from (``decoder_start_id``), as generate() starts it.
    encoder_decoder: bool = False
    decoder_start_id: int | None = None
    # A vision-language model: where an image goes, its prompts hold a run of ``image_tokens`` of ``image_token_id``
    # (the path code feeds each run an image); None for a text model.
    image_token_id: int | None = None
    image_tokens: int = 0
    # The tokens a model's processor wraps each image's run in, where its config declares them (Qwen2-VL's vision
    # start and end, Gemma 3's start and end of image): never drawn as text.
    image_open_id: int | None = None
    image_close_id: int | None = None
    image_marker_ids: tuple[int, ...] = ()  # more ids the model embeds as part of an image (Ovis 2's indicators)

    @property
    def image_layout(self) -> tuple[int, ...]:
        """The tokens one image takes in a prompt: its run of image tokens, inside its wrapping tokens."""
        assert self.image_token_id is not None  # only asked of a vision-language model
        return wrapped_image(self.image_token_id, self.image_tokens, self.image_open_id, self.image_close_id)

    @property
    def image_ids(self) -> frozenset[int]:
        """The ids that stand for an image or its edges: never text."""
        edges = (self.image_token_id, self.image_open_id, self.image_close_id, *self.image_marker_ids)
        return frozenset(t for t in edges if t is not None)


@dataclass(frozen=True)
class ModelRequest:
    """The model a run asks for and how to build it: the run's model settings, handed down by the loader (a
    backend never reads the run's configuration)."""

    model: str
    scale: str = "full"
    dtype: str = "float32"
    device: str = "cpu"
    attn: str = "eager"
    init_std: float = 0.2
    weights_seed: int = 0
    trust_remote_code: bool = False
    copies: int = 1  # models built from this one's weights (one per backend): a folder too large for that is refused
    # A backend of the run builds this architecture only from its official configs (TransformerLens 2.3.0's
    # Gemma-2): a registry model is then built from its released config with only its depth and vocabulary shrunk.
    official_only: str = ""  # why, in words ("" : any config will do)


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports, declared (pip-audit style) rather than probed."""

    caches: tuple[str, ...] = DRAWN_CACHES
    features: frozenset[str] = frozenset()
    max_batch: int | None = None  # None: any batch the case space allows
    dtypes: tuple[str, ...] = DTYPES

    # Why a feature this backend usually has is absent for this model, as (feature, reason) pairs: an
    # oracle that needs it is skipped with that reason (e.g. no static cache for a recurrent state).
    absent: tuple[tuple[str, str], ...] = ()
    quantizers: tuple[str, ...] = ()  # the quantized-cache backends installed here (with the quantized-cache feature)
    # The ``cache_implementation`` values the library's own generate() is drawn with for this model here, as the
    # installed version names them ("default": none passed); empty: generate() takes no such choice.
    generate_caches: tuple[str, ...] = ()
    # How a padded batch is told to the model, as the case setting ``padding_mode`` draws it (the first: the mode a
    # case shrinks to); empty: one way only (an explicit attention mask). TransformerLens 2.x/3.x also infers
    # padding from the pad token ("inferred").
    padding_modes: tuple[str, ...] = ()
    # The cache kinds that can be reset and reused (with the cache-reset feature); None: every kind in ``caches``.
    # transformers before 4.56 has reset() on its static cache classes only.
    reset_caches: tuple[str, ...] | None = None

    def allows(self, min_batch: int, needs: frozenset[str]) -> bool:
        """Whether an oracle needing ``min_batch`` rows and the features ``needs`` can run here."""
        return self.why_not(min_batch, needs) is None

    def why_not(self, min_batch: int, needs: frozenset[str]) -> str | None:
        """Why an oracle needing ``min_batch`` rows and the features ``needs`` cannot run here; None if it can."""
        if self.max_batch is not None and self.max_batch < min_batch:
            return f"runs batches of at most {self.max_batch} row(s); the oracle needs {min_batch}"
        reasons = dict(self.absent)
        missing = sorted(needs - self.features)
        if not missing:
            return None
        return "; ".join(reasons.get(feature, f"the backend has no {feature}") for feature in missing)

    def both(self, other: Capabilities) -> Capabilities:
        """What two backends can both do (the cross lane drives them on the same cases)."""
        limits = [b for b in (self.max_batch, other.max_batch) if b is not None]
        return Capabilities(tuple(c for c in self.caches if c in other.caches), self.features & other.features,
                            min(limits) if limits else None, tuple(d for d in self.dtypes if d in other.dtypes),
                            self.absent + other.absent)


Encoder = tuple["torch.Tensor", "torch.Tensor"]  # an encoder-decoder model's encoder ids and mask, [B, S] each


@dataclass
class Trace:
    """What one path computed for a batch.

    tokens: the full sequence, prompt (padded) plus generated tokens, shape [B, T].
    attention_mask: 1 for real tokens, 0 for padding, shape [B, T].
    logits: logits predicting token t+1 at position t, shape [B, T-1, V], float32.
    checked: which positions this path computed logits for (and that are not padding),
        shape [B, T-1]; positions outside it are not compared.
    encoder: an encoder-decoder model's encoder ids and mask ([B, S] each) the decoder ``tokens`` attended to;
        None for a decoder-only model. The uncached reference of the trace needs them.
    """

    tokens: torch.Tensor
    attention_mask: torch.Tensor
    logits: torch.Tensor
    checked: torch.Tensor
    encoder: Encoder | None = None

    @classmethod
    def everywhere(cls, tokens: torch.Tensor, attention_mask: torch.Tensor, logits: torch.Tensor,
                   encoder: Encoder | None = None) -> Trace:
        """A trace with logits at every real position (the cached path, the teacher-forced reference)."""
        logits = logits if logits.element_size() == 8 else logits.float()  # a precise (float64) path keeps its precision
        return cls(tokens, attention_mask, logits, attention_mask[:, :-1].bool(), encoder)

    def row_encoder(self, row: int) -> Encoder | None:
        """Row ``row``'s encoder inputs alone, without their padding; None for a decoder-only trace."""
        if self.encoder is None:
            return None
        ids, mask = self.encoder
        real = mask[row].bool()
        return ids[row][real].unsqueeze(0), mask[row][real].unsqueeze(0)

    @classmethod
    def generated(cls, sequences: torch.Tensor, full_mask: torch.Tensor, step_logits: list[torch.Tensor],
                  prompt_length: int, encoder: Encoder | None = None) -> Trace:
        """A trace for a library's generate(): logits exist only at the positions it generated from."""
        batch, total = full_mask.shape
        # Tensor methods, not torch's functions: this module is imported where torch is not (the CLI, via oracles).
        logits = full_mask.float().new_full((batch, total - 1, step_logits[0].shape[-1]), float("nan"))
        checked = full_mask.new_zeros((batch, total - 1)).bool()
        for i, step in enumerate(step_logits):
            logits[:, prompt_length - 1 + i] = step.float()
            checked[:, prompt_length - 1 + i] = True
        return cls(sequences, full_mask, logits, checked, encoder)


class PathError(Exception):
    """A model path raised: carries which path and the original exception."""

    def __init__(self, path: str, error: BaseException):
        super().__init__(f"{path} path raised {type(error).__name__}: {error}")
        self.path = path
        self.error = error


class Unsupported(Exception):
    """A backend cannot run this model, path or library version: reported once, never a failure."""


class Refused(Exception):
    """The library refused one case with the error it documents for a combination it does not support (a
    backend's table of such refusals says which): the case is not applicable, neither a pass nor a finding."""


CacheContents = Iterator[tuple[int, str, "torch.Tensor", "torch.Tensor"]]


class Backend(ABC):
    """A loaded model plus the paths that oracles compare."""

    name: str = "abstract"
    info: ModelInfo
    capabilities: Capabilities = Capabilities()
    api: str = ""  # the library and API version, when it is worth saying (e.g. "TransformerLens 4.3.0")
    # (length, why) where this backend computes the function of the model it was converted from only for sequences
    # up to that many positions, by the library's own documented design (a builder without the sliding window);
    # None: any length. The cross oracle keeps to those sequences.
    agrees_up_to: tuple[int, str] | None = None

    @abstractmethod
    def cached(self, case: Case, tokens: torch.Tensor | None = None, *, cache: str | None = None,
               chunks: tuple[int, ...] | None = None, precise: bool = False) -> Trace:
        """Prefill ``case`` in its chunks into a fresh cache, then decode.

        Greedy when ``tokens`` is None; otherwise feeds ``tokens`` (teacher forcing)
        so two paths can be compared position by position. ``precise``: the same path in the
        higher precision the run's dtype is checked against (float64 for float32, float32 for
        half dtypes), where rounding shrinks by orders of magnitude and a cache bug does not.
        """

    @abstractmethod
    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, precise: bool = False,
                  encoder: Encoder | None = None) -> torch.Tensor:
        """Uncached logits from ONE teacher-forced forward pass: shape [B, T-1, V], as float64
        (``precise``: computed in the higher precision, as for :meth:`cached`). ``encoder``: an encoder-decoder
        model's encoder inputs (``tokens`` are then its decoder's); only given for such a model."""

    @abstractmethod
    def generate(self, case: Case) -> Trace:
        """The library's own user-facing generation entry point, greedy, with logits."""

    @abstractmethod
    def reproduction(self, oracle: str, body: str, case: Case, bounds: Bounds) -> str:
        """A standalone Python script reproducing ``oracle`` on ``case`` at ``bounds``: ``body`` is the oracle's script
        body (its comparisons on ``subject``), run after the embedded path code and the rebuilt model."""

    def reused(self, case: Case, tokens: torch.Tensor) -> Trace:
        """Like :meth:`cached`, on a cache first used for ``case.reuse_batch`` rows, then reset.
        Declared by the ``cache-reset`` feature."""
        raise Unsupported(f"backend {self.name} cannot reset and reuse a cache")

    def beam(self, case: Case) -> Trace:
        """The library's generate() with beam search (``case.settings``: num_beams, num_return_sequences): one
        row per returned sequence, with the logits its beam was scored with at each step. Declared by the
        ``beam-search`` feature."""
        raise Unsupported(f"backend {self.name} has no beam search")

    def assisted(self, case: Case) -> Trace:
        """The library's generate() with assisted decoding (``case.settings``: drafter, draft_tokens), greedy,
        batch 1. Declared by the ``assisted-decoding`` feature."""
        raise Unsupported(f"backend {self.name} has no assisted decoding")

    def compiled(self, case: Case) -> Trace:
        """The library's generate() with its decoding steps compiled (``torch.compile``) on a static cache, greedy.
        Declared by the ``compiled-decoding`` feature."""
        raise Unsupported(f"backend {self.name} has no compiled decoding")

    def attention_variants(self) -> dict[str, Backend]:
        """This backend under each other attention implementation the model declares and the device runs
        (by name), in the same dtype; the run's own is this backend. Declared by ``attention-implementations``."""
        raise Unsupported(f"backend {self.name} has one attention implementation")

    def prefix_reused(self, case: Case, tokens: torch.Tensor, operation: str) -> Trace:
        """Like :meth:`cached` feeding ``tokens``, continued from a cache of the first prefill chunk that went
        through ``operation`` (copy, crop, select, reorder). Declared by the ``cache-operations`` feature."""
        raise Unsupported(f"backend {self.name} cannot operate on a cache")

    def continuous_batched(self, case: Case) -> Trace:
        """Each prompt as its own request through the library's continuous batching (paged cache, settings in
        ``case.settings``), greedy: logits of width 1, the log-prob of each generated token. Declared by the
        ``continuous-batching`` feature."""
        raise Unsupported(f"backend {self.name} has no continuous batching")

    def cache_contents(self, case: Case, tokens: torch.Tensor) -> CacheContents:
        """For diagnosis (the ``cache-contents`` feature): per layer, the keys and values a cache holds
        after the case's incremental path beside those one pass writes: (layer, part, incremental, one pass)."""
        return iter(())

    def module(self) -> torch.nn.Module | None:
        """The torch module whose decoder layers diagnosis hooks; None when there is none."""
        return None

    def texts(self, prompts: tuple[tuple[int, ...], ...]) -> list[str] | None:
        """The prompts as text, where a tokenizer is known; None otherwise."""
        return None

    def release_precise(self) -> None:
        """Free whatever the precise paths hold (after calibration)."""

    def precise_view(self, attn: str | None = None) -> Backend | None:
        """This backend with every path in the higher precision (float64 for float32, float32 for half
        dtypes), for calibration; ``attn``: with that attention implementation instead of the run's.
        None where it has none."""
        return None

    def mutant(self, kind: str, logit_scale: float) -> Backend | None:
        """A copy of this backend whose cached path carries the planted bug ``kind`` (see
        :mod:`fuzzkv.canaries`), for checking that a run can see; None where it cannot be planted."""
        return None


class Uncached(Protocol):
    """What has an uncached reference: a backend, or a wrapper remembering one's results."""

    def reference(self, tokens: torch.Tensor, attention_mask: torch.Tensor, *, precise: bool = False,
                  encoder: Encoder | None = None) -> torch.Tensor: ...


def uncached(backend: Uncached, tokens: torch.Tensor, attention_mask: torch.Tensor, encoder: Encoder | None = None,
             *, precise: bool = False) -> torch.Tensor:
    """``backend``'s uncached reference over ``tokens`` (with the encoder inputs they attended to, for an
    encoder-decoder model: only then is ``encoder`` passed, so a backend of decoder-only models need not take it)."""
    extra = {} if encoder is None else {"encoder": encoder}
    return backend.reference(tokens, attention_mask, precise=precise, **extra)


Measure = Callable[[Backend], "Tolerance"]


class Scripted(Protocol):
    """What a lane needs of an oracle to write its reproduction script (an ``fuzzkv.oracles.Oracle``)."""

    @property
    def name(self) -> str: ...

    def script_for(self, case: Case) -> str: ...


class Pair:
    """Two implementations of the same model (same weights): what the ``cross`` oracle's paths receive."""

    def __init__(self, reference: Backend, candidate: Backend):
        self.reference, self.candidate = reference, candidate


S = TypeVar("S", covariant=True)  # what a lane hands an oracle's comparisons: a Backend, or a Pair


class Lane(ABC, Generic[S]):
    """What an oracle runs on: ``subject`` is handed to the oracle's comparisons (a backend, or a pair)."""

    name: str
    info: ModelInfo
    capabilities: Capabilities
    backends: tuple[Backend, ...]

    @property
    @abstractmethod
    def subject(self) -> S:
        """What the oracle's comparisons receive."""

    @abstractmethod
    def tolerance(self, measure: Measure) -> Tolerance:
        """This lane's tolerance, from ``measure`` (one backend's tolerance, settled by the runner)."""

    @abstractmethod
    def diagnose(self, verdict: Verdict, threshold: float) -> dict[str, Any]:
        """Where a mismatch's minimal case breaks (see :mod:`fuzzkv.diagnosis`)."""

    @abstractmethod
    def reproduction(self, oracle: Scripted, case: Case, bounds: Bounds) -> str:
        """A standalone script reproducing ``oracle`` on ``case`` on this lane."""

    def texts(self, prompts: tuple[tuple[int, ...], ...]) -> list[str] | None:
        return self.backends[0].texts(prompts)

    def precise_subject(self) -> S | None:
        """``subject`` with every path in the higher precision, to tell rounding from a bug in a mismatch
        close to its bounds; None where the lane has none. Freed again by :meth:`release_precise`."""
        return None

    def release_precise(self) -> None:
        """Free what :meth:`precise_subject` built."""

    def canary(self, kind: str, logit_scale: float) -> Lane[S] | None:
        """This lane with the planted bug ``kind`` in its cached path (see :mod:`fuzzkv.canaries`);
        None where it cannot be planted."""
        return None


@dataclass
class Lanes:
    """The lanes a run drives, by name ("hf", "tl", "cross"), and why any asked for is missing."""

    info: ModelInfo  # the model under test (also when no lane could be built)
    lanes: dict[str, Lane[Any]]
    unsupported: dict[str, str] = field(default_factory=dict)  # lane name -> one-line reason
    description: str = ""  # the backends in one line, for the run's header
