"""Each setting of a run is declared once, on its RunConfig field (fuzzkv.config.Setting): the CLI's options, the
validation, the pytest plugin's options and the docs' options table are made from it, and the public API's keywords
(written out for their types) are held to it here, so a new or changed setting fails until each follows."""

from __future__ import annotations

import inspect
from dataclasses import fields
from pathlib import Path
from typing import Any, get_type_hints

import click
import pytest

from fuzzkv import api, pytest_plugin
from fuzzkv.cli import cli
from fuzzkv.config import SETTINGS, TABLE_COMMAND, RunConfig, options_table, with_options_table
from fuzzkv.errors import UsageError
from fuzzkv.sweep import SweepConfig

ROOT = Path(__file__).resolve().parents[2]
CLI_DOCS = ROOT / "docs" / "reference" / "cli.md"
FLAGGED = {name: setting for name, setting in SETTINGS.items() if setting.flag is not None}
# The options that build the model: what calibrate takes (with --db), before run's others in --help.
MODEL = ("model", "backend", "scale", "dtype", "device", "attn", "init_std", "trust_remote_code")
# The settings of a search, which check (one given case, in memory) does not take; it takes every other one.
SEARCH_ONLY = {"model", "oracles", "seed", "max_examples", "max_time", "db_url", "max_batch", "max_prompt_len",
               "max_new_tokens"}


def keywords(function: Any) -> dict[str, inspect.Parameter]:
    return {name: parameter for name, parameter in inspect.signature(function, eval_str=True).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY}


def test_every_field_of_run_config_declares_its_setting():
    assert list(SETTINGS) == [each.name for each in fields(RunConfig)]
    flags = [setting.flag for setting in FLAGGED.values()]
    assert len(set(flags)) == len(flags) and all(flag.startswith("--") for flag in flags)


@pytest.mark.parametrize("command, names", [("run", list(FLAGGED)), ("calibrate", [*MODEL, "db_url"])])
def test_each_setting_with_a_flag_is_an_option_made_from_its_declaration(command, names):
    params = {param.name: param for param in cli.commands[command].params}
    for name in names:
        setting, option = SETTINGS[name], params[name]
        assert isinstance(option, click.Option), name
        assert option.opts == [setting.flag] + ([setting.short] if setting.short else []), name
        assert option.help == (setting.help_text() or None), name
        assert option.required == setting.required and option.multiple == setting.many, name
        if setting.kind is bool:
            assert option.is_flag and option.default is setting.default, name
            continue
        # --db: None, read from $FUZZKV_DB when the command runs; --oracle: () for none given.
        assert option.default == (() if setting.many else setting.default), name
        if setting.choices:
            assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == setting.choices, name
        else:
            assert option.type.name == {int: "integer", float: "float", str: "text"}[setting.kind], name
    # The model's options come first, in calibrate and in run (the order --help lists them in).
    assert [param.name for param in cli.commands[command].params][:len(MODEL)] == list(MODEL)


@pytest.mark.parametrize("args, message", [
    ({"max_batch": 0}, "--max-batch must be between 1 and 64, got 0."),
    ({"max_examples": 100_001}, "--max-examples must be between 1 and 100000, got 100001."),
    ({"max_prompt_len": 0}, "--max-prompt-len must be between 1 and 8192, got 0."),
    ({"max_time": -5.0}, "--max-time must be between 0 and a week of seconds, got -5.0."),
    ({"deadline": 0.0}, "--deadline must be between 0 and a day of seconds, got 0.0."),
    ({"init_std": 0.0}, "--init-std must be in (0, 10], got 0.0."),
    ({"tolerance": -1.0}, "--tolerance must be positive, got -1.0."),
    ({"scale": "huge"}, "--scale must be one of full, tiny, got 'huge'."),
    ({"dtype": "int8"}, "--dtype must be one of float32, bfloat16, float16, got 'int8'."),
    ({"trust_remote_code": "yes"}, "--trust-remote-code is a switch (True or False), got 'yes'."),
])
def test_a_value_out_of_its_declared_bounds_or_choices_is_refused_in_one_line_naming_the_flag(args, message):
    with pytest.raises(UsageError) as refused:
        RunConfig(model="llama", **args)
    assert refused.value.one_line().startswith(message), refused.value.one_line()


def test_each_bound_is_inclusive_or_exclusive_as_declared():
    for name, setting in SETTINGS.items():
        for bound, taken in ((setting.minimum, True), (setting.exclusive_minimum, False), (setting.maximum, True)):
            if bound is None:
                continue
            value = setting.kind(bound)
            if taken:
                RunConfig(model="llama", **{name: value})
            else:
                with pytest.raises(UsageError, match=f"^{setting.flag} must be"):
                    RunConfig(model="llama", **{name: value})


def test_fuzz_takes_every_setting_as_a_keyword_with_its_default_and_type():
    hints = get_type_hints(RunConfig)
    taken = keywords(api.fuzz)
    renamed = {"db_url": "db"}  # db=None: in memory for the call (the CLI's default is $FUZZKV_DB or a file)
    assert set(taken) - {"workers", "on_event"} == {renamed.get(name, name) for name in SETTINGS} - {"model"}
    for name, setting in SETTINGS.items():
        if name in ("model", *renamed):
            continue
        parameter = taken[name]
        assert parameter.default == setting.default, name
        if name != "oracles":  # a name or any iterable of names, made a tuple
            assert parameter.annotation == hints[name], name


def test_check_takes_every_setting_but_the_searchs_with_its_default_and_type():
    hints = get_type_hints(RunConfig)
    taken = keywords(api.check)
    # A new setting fails here until check takes it or it is listed as one of a search only.
    assert set(taken) - {"oracle"} == set(SETTINGS) - SEARCH_ONLY
    for name in set(taken) - {"oracle"}:
        assert taken[name].default == SETTINGS[name].default, name
        assert taken[name].annotation == hints[name], name
    assert set(pytest_plugin.CHECK_OPTIONS) == set(taken)  # what the fixture's check passes on


class Recorded:
    """A stand-in for pytest's option parser: records each option the plugin adds."""

    def __init__(self) -> None:
        self.options: dict[str, dict[str, Any]] = {}

    def getgroup(self, *args: Any) -> Recorded:
        return self

    def addoption(self, name: str, **kwargs: Any) -> None:
        self.options[name] = kwargs


def test_the_pytest_plugins_options_are_the_run_settings_of_the_same_names():
    parser = Recorded()
    pytest_plugin.pytest_addoption(parser)
    assert {"--fuzzkv-max-examples", "--fuzzkv-seed", "--fuzzkv-db"} <= set(parser.options)
    fuzz_keywords = keywords(api.fuzz)
    for keyword, (name, _, _) in pytest_plugin.OPTIONS.items():
        setting, option = SETTINGS[name], parser.options[pytest_plugin.option_name(keyword)]
        assert keyword in fuzz_keywords
        assert pytest_plugin.option_name(keyword) == f"--fuzzkv-{setting.flag.removeprefix('--')}"
        assert option["type"] is setting.kind and option["default"] is None  # None: the marker's or profile's holds
        assert option["help"].startswith(setting.summary())
    assert "(default: 0)" in parser.options["--fuzzkv-seed"]["help"]


def test_sweep_defaults_shared_with_run_are_runs():
    for name in ("seed", "dtype", "device", "backend"):
        assert SweepConfig.__dataclass_fields__[name].default == SETTINGS[name].default, name


def test_the_docs_options_table_is_the_one_the_settings_make():
    text = CLI_DOCS.read_text()
    assert with_options_table(text) == text, (
        f"{CLI_DOCS.relative_to(ROOT)}'s options table differs from what fuzzkv/config.py's settings make: "
        f"run `{TABLE_COMMAND}` (or print the table with `python -m fuzzkv.config`)")


def test_the_options_table_has_a_row_per_flag_with_its_default_and_bounds():
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in options_table().splitlines()[2:]}
    assert list(rows) == [", ".join(f"`{flag}`" for flag in (s.flag, s.short) if flag) for s in FLAGGED.values()]
    assert rows["`--init-std`"].startswith("| `--init-std` | `0.2` | in (0, 10] | std of random weights")
    assert "| `--max-batch` | `4` | between 1 and 64 |" in rows["`--max-batch`"]
    assert "| `--dtype` | `float32` | `float32`, `bfloat16`, `float16` |" in rows["`--dtype`"]
    assert "`--model`, `-m` | required |" in rows["`--model`, `-m`"]
    assert "| `--max-prompt-len` | 24 tiny, 16 full |" in rows["`--max-prompt-len`"]
