"""fuzzkv's pytest plugin (registered as the ``pytest11`` entry point ``fuzzkv``): a ``fuzzkv`` fixture and a
``fuzzkv`` marker, so a test module says in three lines that a model's cache matches its uncached path::

    @pytest.mark.fuzzkv(scale="tiny", max_examples=30)
    def test_kv_cache(fuzzkv):
        fuzzkv(build_my_model)

``fuzzkv(model, **options)`` calls :func:`fuzzkv.fuzz` with the marker's options, then the command line's, then
the call's own (each overriding the one before), and fails the test on a finding: pytest's report shows the
findings grouped by root cause (one bug seen by several oracles is one), each with its minimal case, where it breaks
and the path of its saved reproduction script (``fuzzkv-repro/`` beside the ``--fuzzkv-db`` file, else in the current
folder, or ``--fuzzkv-repro-dir DIR``); the scripts themselves are not pasted into the report. It returns the
:class:`fuzzkv.Result`. A blind run or one that tested nothing fails too: it proves nothing.

Options: ``--fuzzkv-max-examples N``, ``--fuzzkv-seed N``, ``--fuzzkv-db URL`` (keep the store, and with it
Hypothesis' examples and the known failures, between runs: a CI caches the file) and ``--fuzzkv-profile
dev|ci`` (default: ``ci`` when ``$CI`` is set). The profiles are Hypothesis settings profiles named
``fuzzkv-dev`` (quick: 25 examples per oracle) and ``fuzzkv-ci`` (100), registered unless a ``conftest.py``
registered its own under those names first (their ``max_examples`` is what the fixture reads).

Loading the plugin imports no torch: a model is built when the fixture is called.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, cast

import pytest
from hypothesis import settings

from fuzzkv import api
from fuzzkv.config import SETTINGS

PROFILES = {"dev": "fuzzkv-dev", "ci": "fuzzkv-ci"}
# Only max_examples is read from them: fuzzkv's searches are seeded (--fuzzkv-seed, default 0) either way.
PROFILE_SETTINGS = {"fuzzkv-dev": settings(max_examples=25), "fuzzkv-ci": settings(max_examples=100)}
# The fuzz keywords the command line sets, each as --fuzzkv-<its fuzzkv run flag> with its setting's type and help
# (fuzzkv.config.SETTINGS): keyword -> (setting, metavar, the fixture's default in words, None: the setting's).
OPTIONS = {"max_examples": ("max_examples", "N", "the profile's"), "seed": ("seed", "N", None),
           "db": ("db_url", "URL", "in memory; e.g. sqlite:///fuzzkv.db keeps Hypothesis' examples and the known "
                  "failures between runs")}


def option_name(keyword: str) -> str:
    """The command-line option of a fuzz keyword of OPTIONS: ``db`` -> ``--fuzzkv-db`` (``fuzzkv run --db``)."""
    flag = SETTINGS[OPTIONS[keyword][0]].flag
    assert flag is not None
    return f"--fuzzkv-{flag.removeprefix('--')}"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fuzzkv", "fuzzkv: KV-cache fuzzing")
    for keyword, (name, metavar, default) in OPTIONS.items():
        setting = SETTINGS[name]  # None below: not given, so the marker's or the profile's value holds
        group.addoption(option_name(keyword), type=setting.kind, default=None, metavar=metavar,
                        help=f"{setting.summary()} (default: {default or setting.default})")
    group.addoption("--fuzzkv-repro-dir", default=None, metavar="DIR",
                    help="folder the findings' reproduction scripts are saved in (default: fuzzkv-repro beside the "
                         "--fuzzkv-db file, else in the current folder)")
    group.addoption("--fuzzkv-profile", choices=tuple(PROFILES), default=None,
                    help="dev (25 examples per oracle) or ci (100); default ci when $CI is set, else dev")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzzkv(**options): fuzzkv.fuzz keyword options for the fuzzkv fixture "
                                       "(oracles, backend, scale, max_examples, ...)")
    for name, profile in PROFILE_SETTINGS.items():
        try:
            settings.get_profile(name)
        except Exception:  # noqa: BLE001 - Hypothesis raises InvalidArgument for an unknown profile
            settings.register_profile(name, profile)


class Fuzzer:
    """The ``fuzzkv`` fixture: call it with a model (a name, a built model, or a factory)."""

    def __init__(self, node: pytest.Item, defaults: dict[str, Any], repro_dir: str | None = None):
        self.node = node
        self.defaults = defaults
        self.repro_dir = repro_dir

    def __call__(self, model: object, *, fail_on: api.FailOn = "any", **options: Any) -> api.Result:
        """Fuzz ``model`` and fail the test on a finding; returns the :class:`fuzzkv.Result`."""
        __tracebackhide__ = True
        result = api.fuzz(model, **{**self.defaults, **options})
        result.raise_for_findings(fail_on, repro_dir=self.repro_dir)
        return result

    def check(self, model: object, case: Any, **options: Any) -> Any:
        """:func:`fuzzkv.check` with the fixture's model options; returns the verdict (asserting nothing)."""
        kept = {k: v for k, v in self.defaults.items() if k in CHECK_OPTIONS}
        return api.check(model, case, **{**kept, **options})


CHECK_OPTIONS = tuple(name for name, parameter in inspect.signature(api.check).parameters.items()
                      if parameter.kind is parameter.KEYWORD_ONLY)  # the fixture passes these of its options on


@pytest.fixture
def fuzzkv(request: pytest.FixtureRequest) -> Fuzzer:
    """Fuzz a model's KV cache from a test: ``fuzzkv(model)`` fails the test on a finding."""
    config = request.config
    profile = config.getoption("--fuzzkv-profile") or ("ci" if os.environ.get("CI") else "dev")
    defaults: dict[str, Any] = {"max_examples": settings.get_profile(PROFILES[profile]).max_examples}
    marker = request.node.get_closest_marker("fuzzkv")
    if marker is not None:
        defaults.update(marker.kwargs)
    for keyword in OPTIONS:
        value = config.getoption(option_name(keyword))
        if value is not None:
            defaults[keyword] = value
    return Fuzzer(cast(pytest.Item, request.node), defaults, config.getoption("--fuzzkv-repro-dir"))

