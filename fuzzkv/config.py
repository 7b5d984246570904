"""The run configuration: every setting of a run, validated once, in one frozen value."""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any, ParamSpec, Union, get_args, get_origin, get_type_hints

from fuzzkv.backends.drivers import DRIVERS, HF, cross_lane_name
from fuzzkv.case import DTYPES
from fuzzkv.db import redact_url
from fuzzkv.errors import UsageError
from fuzzkv.oracles import ORACLES

DEFAULT_DB = "sqlite:///fuzzkv.db"
DB_ENV = "FUZZKV_DB"
SCALES = ("full", "tiny")
ATTNS = ("eager", "sdpa")
BACKENDS = tuple(DRIVERS)  # the libraries --backend lists, comma-separated (registered drivers)
BACKEND_ALIASES = {"both": "hf,tl"}  # "both" predates the list: HF and TransformerLens


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
    crosses = {cross_lane_name(name) for name in names if name != HF} if HF in names else set()
    return set(names) | crosses


def backend_option_for(lane: str) -> str | None:
    """The --backend value that drives ``lane`` (a stored failure's), None for a lane this fuzzkv does not know."""
    for name in BACKENDS:
        if lane == name:
            return name
        if lane == cross_lane_name(name) and name != HF:
            return f"{HF},{name}"
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
class Setting:
    """How one :class:`RunConfig` field is set from outside, declared once on the field (``field(metadata=
    option(...))``): its flag, help, choices and bounds. From it come the options of ``fuzzkv run`` and ``fuzzkv
    calibrate`` (:mod:`fuzzkv.cli`), the field's validation, the pytest plugin's matching ``--fuzzkv-*`` options and
    the options table of docs/reference/cli.md (:func:`options_table`); ``fuzzkv.fuzz`` and ``fuzzkv.check`` take
    the fields as keywords (tests/unit/test_settings.py holds them to it)."""

    flag: str | None  # "--init-std"; None: a setting of the Python API only
    help: str = ""  # the --help text; "{default}" in it stands for default_text (help_text)
    short: str | None = None  # "-m"
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # the bounds: value >= minimum, value > exclusive_minimum, value <= maximum
    exclusive_minimum: float | None = None
    maximum: float | None = None
    maximum_text: str | None = None  # the maximum as error messages and docs say it ("a day of seconds")
    default_text: str | None = None  # the default in words where it is no plain value ("24 tiny, 16 full")
    doc: str | None = None  # the docs table's meaning, in Markdown, where it says more than the help
    # Filled in from the field (see SETTINGS): its name, its value type (an optional field's type without None, a
    # tuple's item type), its default (None for a required field or one with a default factory), whether it has
    # none, and whether it is a tuple (a repeatable flag).
    name: str = ""
    kind: type = str
    default: Any = None
    required: bool = False
    many: bool = False

    def help_text(self) -> str:
        """The --help text: the help with ``default_text`` in place of "{default}" (click shows a plain default
        itself)."""
        return self.help.replace("{default}", self.default_text or "none")

    def summary(self) -> str:
        """The help as a phrase, without its default: "examples per oracle" (a docs table cell, a plugin's help)."""
        text = self.help.replace(" [default: {default}]", "").rstrip(".")
        return text[:1].lower() + text[1:]

    def range_text(self) -> str | None:
        """The bounds in words ("between 1 and 64", "in (0, 10]", "positive"); None: unbounded."""
        highest = self.maximum_text or self.maximum
        if self.minimum is not None:
            return f"at least {self.minimum}" if highest is None else f"between {self.minimum} and {highest}"
        if self.exclusive_minimum is not None:
            if highest is None:
                return "positive" if self.exclusive_minimum == 0 else f"above {self.exclusive_minimum}"
            return f"between {self.exclusive_minimum} and {highest}" if self.maximum_text else \
                f"in ({self.exclusive_minimum}, {highest}]"
        return None if highest is None else f"at most {highest}"

    def check(self, value: Any) -> None:
        """Raise a UsageError, one line naming the flag, for a value this setting does not take (None: not set,
        the default applies; a tuple's items are checked where it is used)."""
        if value is None or self.many:
            return
        flag = self.flag or self.name
        if self.kind is bool and not isinstance(value, bool):  # a stored or API value: only an explicit True is on
            raise UsageError(f"{flag} is a switch (True or False), got {value!r}.")
        if self.choices and value not in self.choices:
            raise UsageError(f"{flag} must be one of {', '.join(self.choices)}, got {value!r}.")
        if ((self.minimum is not None and not value >= self.minimum)
                or (self.exclusive_minimum is not None and not value > self.exclusive_minimum)
                or (self.maximum is not None and not value <= self.maximum)):
            raise UsageError(f"{flag} must be {self.range_text()}, got {value}.")


SETTING = "fuzzkv.setting"  # the key of a RunConfig field's metadata that holds its Setting
P = ParamSpec("P")


def _as_metadata(declare: Callable[P, Setting]) -> Callable[P, dict[str, Setting]]:
    def metadata(*args: P.args, **kwargs: P.kwargs) -> dict[str, Setting]:
        return {SETTING: declare(*args, **kwargs)}
    return metadata


# A RunConfig field's metadata: ``field(default=..., metadata=option("--flag", "Help.", ...))`` (Setting's arguments).
option = _as_metadata(Setting)


def _bound(config: type) -> dict[str, Setting]:
    """Each field's Setting, with the field's name, value type and default filled in."""
    hints = get_type_hints(config)
    bound: dict[str, Setting] = {}
    for each in fields(config):
        kind, many = _value_type(hints[each.name])
        bound[each.name] = replace(each.metadata[SETTING], name=each.name, kind=kind, many=many,
                                   default=None if each.default is MISSING else each.default,
                                   required=each.default is MISSING and each.default_factory is MISSING)
    return bound


def _value_type(hint: Any) -> tuple[type, bool]:
    """(the value type, whether a tuple of them) of a field's type: ``float | None`` -> (float, False),
    ``tuple[str, ...]`` -> (str, True)."""
    if get_origin(hint) is tuple:
        return get_args(hint)[0], True
    if get_origin(hint) in (Union, types.UnionType):
        return next(arg for arg in get_args(hint) if arg is not type(None)), False
    return hint, False


def _opt_in() -> str:
    """The oracles a run leaves out unless asked for by --oracle (with the devices some are in the default set on)."""
    return ", ".join(f"{name} (default on {'/'.join(oracle.default_on)})" if oracle.default_on else name
                     for name, oracle in ORACLES.items() if not oracle.default)


@dataclass(frozen=True)
class RunConfig:
    """Settings of one ``fuzzkv run``: each field declares its flag, help, choices and bounds (:class:`Setting`)."""

    model: str = field(metadata=option(
        "--model", "Registry name (see 'fuzzkv models'), local directory, GGUF file, hub id in the local HF cache, or "
        "package.module:factory. A factory runs your code by design.", short="-m"))
    backend: str = field(default="hf", metadata=option(
        "--backend", f"One or more of {', '.join(BACKENDS)}, comma-separated (hf: transformers; tl: TransformerLens; "
        "torchtune); with hf listed, the cross oracle compares HF with each other. 'both' is hf,tl.",
        doc="one or more of `hf` (transformers), `tl` (TransformerLens: `pip install 'fuzzkv[tl]'`), `torchtune`, "
            "comma-separated; with `hf` listed, `cross` compares HF with each other one. `both` is `hf,tl`"))
    # Empty: every oracle that applies to the chosen backend(s) (the check of each name is __post_init__'s).
    oracles: tuple[str, ...] = field(default=(), metadata=option(
        "--oracle", "Oracle to run (repeatable). Default: all that apply to --backend, except the opt-in "
        f"{_opt_in()}.", choices=tuple(ORACLES), default_text="all that apply to `--backend`, except the opt-in ones",
        doc="repeatable; see [oracles](oracles.md)"))
    scale: str = field(default="full", metadata=option(
        "--scale", "'tiny' shrinks a registry architecture or model type, keeping every cache feature; a folder, GGUF "
        "file, hub id or factory runs at its own size.", choices=SCALES,
        doc="`tiny` shrinks a registry architecture or model type (2-4 layers, hidden 64, vocab 1024, window 8) "
            "keeping every cache feature; a folder, GGUF file, hub id or factory runs at its own size, and the run's "
            'first line says "its own size"'))
    dtype: str = field(default="float32", metadata=option(
        "--dtype", choices=DTYPES, doc="the precision the model runs in"))
    device: str = field(default="cpu", metadata=option("--device", doc="e.g. `cuda`"))
    attn: str = field(default="eager", metadata=option(
        "--attn", choices=ATTNS, doc="the attention implementation (`sdpa` where the model supports it)"))
    seed: int = field(default=0, metadata=option("--seed", "Same seed and versions: same cases."))
    max_examples: int = field(default=50, metadata=option(
        "--max-examples", "Examples per oracle.", minimum=1, maximum=100_000,
        doc="examples per oracle (shrinking runs more)"))
    max_time: float | None = field(default=None, metadata=option(
        "--max-time", "Seconds for the whole run (shrinking may run a little over).", exclusive_minimum=0,
        maximum=7 * 24 * 3600, maximum_text="a week of seconds",
        doc="seconds for the whole run, shared among oracles; shrinking a found failure may run a little over"))
    db_url: str = field(default_factory=default_db_url, metadata=option(
        "--db", "Store URL [default: {default}].", default_text=f"${DB_ENV} or {DEFAULT_DB}",
        doc="where runs and failures are stored (see [the store](store.md))"))
    init_std: float = field(default=0.2, metadata=option(
        "--init-std", "Std of random weights; transformers' 0.02 hides small cache bugs.", exclusive_minimum=0,
        maximum=10, doc="std of random weights; transformers' 0.02 hides small cache bugs (see "
        "[random weights](../explanation/random-weights-and-memory.md))"))
    # Random weights are seeded apart from --seed: runs with other case seeds fuzz the same model.
    weights_seed: int = field(default=0, metadata=option(
        None, "Seed of the random weights, apart from the case seed: runs with other case seeds fuzz the same "
        "model."))
    tolerance: float | None = field(default=None, metadata=option(
        "--tolerance", "Fix the logit tolerance instead of using the calibrated baseline.", exclusive_minimum=0,
        default_text="calibrated"))
    max_batch: int = field(default=4, metadata=option(
        "--max-batch", minimum=1, maximum=64, doc="most prompts in one case"))
    max_prompt_len: int | None = field(default=None, metadata=option(
        "--max-prompt-len", "Longest random prompt [default: {default}].", minimum=1, maximum=8192,
        default_text="24 tiny, 16 full"))
    max_new_tokens: int | None = field(default=None, metadata=option(
        "--max-new-tokens", "Most generated tokens [default: {default}].", minimum=1, maximum=8192,
        default_text="12 tiny, 8 full"))
    deadline: float | None = field(default=DEFAULT_DEADLINE, metadata=option(
        "--deadline", "Seconds one example may take; a case past it is reported as an error finding (a hang), after "
        "which the search's and calibration's other cases get 10 x the slowest finished case.", exclusive_minimum=0,
        maximum=24 * 3600, maximum_text="a day of seconds",
        doc="seconds one example may take; a case whose paths take longer is an `error` finding (`Deadline`: a "
            "hang), shrunk like any other, and the run goes on. Once a case has hung, each later case of the same "
            "search (the shrinker's smaller tries) or calibration gets 10 x the slowest case that finished (at least "
            "10 s, at most the deadline) instead of waiting out the deadline again; the minimal case is re-checked "
            "under the full deadline"))
    # Run the code a model folder ships (its config.json's auto_map): only when the user passes --trust-remote-code.
    trust_remote_code: bool = field(default=False, metadata=option(
        "--trust-remote-code", "Run the model code a --model folder ships (its config.json's auto_map), with your "
        "permissions; without it such a folder is refused. Weights are still safetensors only.",
        doc="run the model code a `--model` folder (or cached hub id) ships in its `config.json`'s `auto_map`, with "
            "your permissions (see [fuzz your own model](../how-to/fuzz-your-own-model.md)); without it such a "
            "folder is refused"))

    def __post_init__(self) -> None:
        unknown = [o for o in self.oracles if o not in ORACLES]
        if unknown:
            raise UsageError(f"unknown oracle {unknown[0]!r}.", tip=f"choose from {', '.join(ORACLES)}")
        lanes = lanes_of(self.backend)
        for name in self.oracles:
            if not any(ORACLES[name].runs_on(lane) for lane in lanes):
                need = " or ".join(option for option in (*BACKENDS, *(f"{HF},{b}" for b in BACKENDS if b != HF))
                                   if any(ORACLES[name].runs_on(lane) for lane in lanes_of(option)))
                raise UsageError(f"oracle {name} does not run with --backend {self.backend}.",
                                 tip=f"use --backend {need}")
        for setting in SETTINGS.values():  # each setting's choices and bounds, as declared on its field
            setting.check(getattr(self, setting.name))

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


SETTINGS = _bound(RunConfig)  # RunConfig's settings by field name, in field order


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


# docs/reference/cli.md holds options_table() between these markers (the start marker's comment runs on to "-->").
TABLE_START = "<!-- generated options table"
TABLE_END = "<!-- end of the generated options table -->"
TABLE_COMMAND = "python -m fuzzkv.config --update docs/reference/cli.md"


def options_table() -> str:
    """The Markdown table of the settings ``fuzzkv run`` has a flag for, as docs/reference/cli.md shows it."""
    rows = ["| option | default | values | meaning |", "| --- | --- | --- | --- |"]
    for setting in SETTINGS.values():
        if setting.flag is None:
            continue
        flags = ", ".join(f"`{flag}`" for flag in (setting.flag, setting.short) if flag)
        if setting.required:
            default = "required"
        elif setting.default_text is not None:
            default = setting.default_text
        elif setting.kind is bool:
            default = "on" if setting.default else "off"
        elif setting.default is None:
            default = "none"
        else:
            default = f"`{setting.default:g}`" if isinstance(setting.default, float) else f"`{setting.default}`"
        values = (", ".join(f"`{choice}`" for choice in setting.choices) if setting.choices and not setting.many
                  else setting.range_text() or "")
        meaning = setting.doc or setting.summary()
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in (flags, default, values, meaning)) + " |")
    return "\n".join(rows) + "\n"


def with_options_table(markdown: str) -> str:
    """``markdown`` with the text between its options-table markers replaced by :func:`options_table`."""
    pattern = re.compile(rf"({re.escape(TABLE_START)}.*?-->\n).*?(?={re.escape(TABLE_END)})", re.S)
    if not pattern.search(markdown):
        raise ValueError(f"no options table markers ({TABLE_START} ... {TABLE_END})")
    return pattern.sub(lambda match: f"{match.group(1)}\n{options_table()}\n", markdown, count=1)


if __name__ == "__main__":  # python -m fuzzkv.config [--update FILE]: print the options table, or rewrite FILE's
    if sys.argv[1:2] == ["--update"] and len(sys.argv) == 3:
        with open(sys.argv[2], encoding="utf-8") as docs:
            updated = with_options_table(docs.read())
        with open(sys.argv[2], "w", encoding="utf-8") as docs:
            docs.write(updated)
    else:
        print(options_table(), end="")
