"""The run configuration: every setting of a run, validated once, in one frozen value."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from fuzzkv.case import DTYPES
from fuzzkv.db import redact_url
from fuzzkv.errors import UsageError
from fuzzkv.oracles import ORACLES

DEFAULT_DB = "sqlite:///fuzzkv.db"
DB_ENV = "FUZZKV_DB"
SCALES = ("full", "tiny")
ATTNS = ("eager", "sdpa")
BACKENDS = ("hf", "tl", "torchtune")  # the libraries --backend lists, comma-separated
BACKEND_ALIASES = {"both": "hf,tl"}  # "both" predates the list: HF and TransformerLens


def cross_lane_name(candidate: str) -> str:
    """The lane of the cross oracle comparing HF with ``candidate``: "cross" for TransformerLens (the name stored
    failures carry since 0.1), "cross-<backend>" for any other."""
    return "cross" if candidate == "tl" else f"cross-{candidate}"


def backends_of(option: str) -> tuple[str, ...]:
    """The backends a --backend value lists (``hf``, ``tl,torchtune``, ``both``), in order; UsageError if unknown."""
    names = [name.strip() for name in BACKEND_ALIASES.get(option, option).split(",")]
    unknown = [name for name in names if name not in BACKENDS]
    if unknown or not names:
        raise UsageError(f"unknown backend {unknown[0] if unknown else option!r} in --backend {option}.",
                         tip=f"list one or more of {', '.join(BACKENDS)} (comma-separated), or 'both' for hf,tl")
    return tuple(dict.fromkeys(names))


def lanes_of(option: str) -> set[str]:
    """The lanes a --backend value drives: each backend's own, and with hf listed, a cross lane of HF vs each other."""
    names = backends_of(option)
    crosses = {cross_lane_name(name) for name in names if name != "hf"} if "hf" in names else set()
    return set(names) | crosses


def backend_option_for(lane: str) -> str | None:
    """The --backend value that drives ``lane`` (a stored failure's), None for a lane this fuzzkv does not know."""
    for name in BACKENDS:
        if lane == name:
            return name
        if lane == cross_lane_name(name) and name != "hf":
            return f"hf,{name}"
    return None
DEFAULT_DEADLINE = 300.0


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes sharing this machine: its cores, or the thread budget
    ``OMP_NUM_THREADS`` sets, shared out. More threads than cores make OpenMP threads spin against each other:
    a forward that takes 5 ms alone takes 500 ms."""
    budget = os.environ.get("OMP_NUM_THREADS", "")
    cores = int(budget) if budget.isdigit() and int(budget) > 0 else (os.cpu_count() or 1)
    return max(1, cores // workers)


def default_db_url() -> str:
    """``$FUZZKV_DB`` if set, else an SQLite file in the current directory."""
    return os.environ.get(DB_ENV) or DEFAULT_DB


@dataclass(frozen=True)
class RunConfig:
    """Settings of one ``fuzzkv run``."""

    model: str
    backend: str = "hf"
    oracles: tuple[str, ...] = ()  # empty: every oracle that applies to the chosen backend(s)
    scale: str = "full"
    dtype: str = "float32"
    device: str = "cpu"
    attn: str = "eager"
    seed: int = 0
    max_examples: int = 50
    max_time: float | None = None
    db_url: str = field(default_factory=default_db_url)
    init_std: float = 0.2
    # Random weights are seeded apart from --seed: runs with other case seeds fuzz the same model.
    weights_seed: int = 0
    tolerance: float | None = None
    max_batch: int = 4
    max_prompt_len: int | None = None
    max_new_tokens: int | None = None
    deadline: float | None = DEFAULT_DEADLINE  # seconds per example; a case past it is an error finding (a hang)
    # Run the code a model folder ships (its config.json's auto_map): only when the user passes --trust-remote-code.
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        unknown = [o for o in self.oracles if o not in ORACLES]
        if unknown:
            raise UsageError(f"unknown oracle {unknown[0]!r}.", tip=f"choose from {', '.join(ORACLES)}")
        lanes = lanes_of(self.backend)
        for name in self.oracles:
            if not lanes & set(ORACLES[name].lanes):
                need = " or ".join(option for option in (*BACKENDS, *(f"hf,{b}" for b in BACKENDS[1:]))
                                   if lanes_of(option) & set(ORACLES[name].lanes))
                raise UsageError(f"oracle {name} does not run with --backend {self.backend}.",
                                 tip=f"use --backend {need}")
        _choice("--scale", self.scale, SCALES)
        _choice("--dtype", self.dtype, DTYPES)
        _choice("--attn", self.attn, ATTNS)
        _positive("--max-examples", self.max_examples, 100_000)
        _positive("--max-batch", self.max_batch, 64)
        for name, value in (("--max-prompt-len", self.max_prompt_len), ("--max-new-tokens", self.max_new_tokens)):
            if value is not None:
                _positive(name, value, 8192)
        if self.max_time is not None and not 0 < self.max_time <= 7 * 24 * 3600:
            raise UsageError(f"--max-time must be between 0 and a week of seconds, got {self.max_time}.")
        if self.deadline is not None and not 0 < self.deadline <= 24 * 3600:
            raise UsageError(f"--deadline must be between 0 and a day of seconds, got {self.deadline}.")
        if not 0 < self.init_std <= 10:
            raise UsageError(f"--init-std must be in (0, 10], got {self.init_std}.")
        if self.tolerance is not None and not self.tolerance > 0:
            raise UsageError(f"--tolerance must be positive, got {self.tolerance}.")
        if not isinstance(self.trust_remote_code, bool):  # a stored or API value: only an explicit True opts in
            raise UsageError(f"--trust-remote-code is a switch (True or False), got {self.trust_remote_code!r}.")

    @property
    def prompt_len_cap(self) -> int:
        return self.max_prompt_len or (24 if self.scale == "tiny" else 16)

    @property
    def new_tokens_cap(self) -> int:
        return self.max_new_tokens or (12 if self.scale == "tiny" else 8)

    def to_dict(self) -> dict:
        """The settings as stored in a run row and shown in ``--json``: the database password redacted."""
        data = asdict(self)
        data["oracles"] = list(self.oracles)
        data["db_url"] = redact_url(self.db_url)
        return data



def fits(config: RunConfig, max_positions: int | None, model: str) -> None:
    """Refuse explicit lengths the model cannot hold (raises UsageError): a case space silently
    cut to fit would not be the one asked for."""
    if max_positions is None or (config.max_prompt_len is None and config.max_new_tokens is None):
        return
    longest = config.prompt_len_cap + config.new_tokens_cap
    if longest > max_positions:
        raise UsageError(f"--max-prompt-len {config.prompt_len_cap} plus --max-new-tokens {config.new_tokens_cap} "
                         f"is {longest} positions, but {model} holds {max_positions}.",
                         tip=f"keep the two under {max_positions + 1}")


def _choice(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UsageError(f"{option} must be one of {', '.join(allowed)}, got {value!r}.")


def _positive(option: str, value: int, ceiling: int) -> None:
    if not 1 <= value <= ceiling:
        raise UsageError(f"{option} must be between 1 and {ceiling}, got {value}.")
