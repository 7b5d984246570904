"""Every standalone script in findings/ exits 1 only where its bug reproduces (printing REPRODUCED), 0 where it ran
and the bug is absent (printing "not reproduced"), and 2 where it cannot run: a package missing, a release without
the API it drives, or an exception that is not the bug's (issue #31: an ImportError used to exit 1, "reproduced").

Each script does this with the same few lines of its own (it imports torch and the library concerned only): an
excepthook that turns any exception escaping the script into exit 2, its imports inside a guard that prints one
line, "cannot run: ...", and exits 2, and, where it drives an API of particular releases, a check of the release.
This module checks those lines in every script (the missing-package and unexpected-exception paths, which need no
particular release). The outcomes that depend on the installed releases are in tests/test_findings.py, which CI runs
in every environment: exit 1 where each bug is present, exit 0 where a release is checked free of it, exit 2 on a
release a script refuses.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "findings").glob("*.py"))
HOOK = "sys.excepthook = lambda *error: (sys.__excepthook__(*error), sys.exit(2))"
# The last line a script prints on stderr when a package is missing (some packages log a warning as they import).
CANNOT_RUN = re.compile(r"(?:.*\n)*cannot run: No module named '(?P<package>[\w.]+)' \(pip install [^\n]+\)\n")


def guard(tree: ast.Module) -> ast.Try:
    """A script's import guard: the module-level try whose handler catches ImportError."""
    [found] = [node for node in tree.body if isinstance(node, ast.Try)
               and any(isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers)]
    return found


def guarded_packages(script: Path) -> list[str]:
    """The top-level packages a script imports inside its guard, torch aside (every script's first)."""
    names = [alias.name if isinstance(node, ast.Import) else node.module for node in guard(ast.parse(script.read_text())).body
             if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names]
    return sorted({name.split(".")[0] for name in names} - {"torch"})


def missing_before_torch(script: Path) -> str | None:
    """A package the script imports before torch that is not installed here (it stops there first), if any."""
    for node in guard(ast.parse(script.read_text())).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            package = (node.names[0].name if isinstance(node, ast.Import) else node.module).split(".")[0]
            if package == "torch":
                return None
            if importlib.util.find_spec(package) is None:
                return package
    return None


def run(script: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, **env})


def test_every_script_has_the_exit_code_lines_and_imports_nothing_but_the_standard_library_outside_its_guard():
    for script in SCRIPTS:
        text = script.read_text()
        tree = ast.parse(text)
        checked = guard(tree)
        lines = text.splitlines()
        assert HOOK in lines, f"{script.name} does not exit 2 on an exception that is not its bug"
        # The excepthook is set before anything but the standard library is imported.
        assert lines.index(HOOK) + 1 < checked.lineno, f"{script.name}: the excepthook is set after the imports"
        [handler] = checked.handlers
        assert ast.unparse(handler.body[-1]) == "sys.exit(2)", script.name
        inside = {id(node) for statement in checked.body for node in ast.walk(statement)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in inside:
                module = node.names[0].name if isinstance(node, ast.Import) else node.module
                assert module.split(".")[0] in sys.stdlib_module_names, f"{script.name}: {module} outside the guard"
        assert "REPRODUCED" in text and "not reproduced" in text, f"{script.name} does not say which"


@pytest.mark.parametrize("stub", ["missing", "broken"])
def test_every_script_exits_2_without_torch_or_with_a_torch_that_fails_to_import(stub, tmp_path):
    """A package missing (torch, every script's first import): one line on stderr and exit 2, never 1. An exception
    that is not the bug's (here a torch whose import raises RuntimeError): its traceback and exit 2, never 1."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    if stub == "missing":
        (stubs / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    else:
        shutil.copy(ROOT / "tests" / "raises_on_import.py", stubs / "torch.py")
    for script in SCRIPTS:
        result = run(script, tmp_path, PYTHONPATH=str(stubs))
        assert result.returncode == 2 and "REPRODUCED" not in result.stdout, (script.name, result.stdout + result.stderr)
        before = missing_before_torch(script)  # a backend imported first and not installed here: named instead
        if stub == "missing" or before:
            assert CANNOT_RUN.fullmatch(result.stderr)["package"] == (before or "torch"), (script.name, result.stderr)
        else:
            assert "RuntimeError: this module is broken at import time" in result.stderr, (script.name, result.stderr)


@pytest.mark.slow
def test_every_script_exits_2_without_each_package_it_imports(tmp_path):
    """Each package a script imports besides torch (the library under test, a quantization backend, torchtune...),
    made missing in turn: the script's own guard exits 2 and names it. One interpreter runs them all
    (tests/without_package.py), torch imported once; the packages themselves must be installed here."""
    runs = [[str(script), package] for script in SCRIPTS for package in guarded_packages(script)]
    for _, package in runs:
        pytest.importorskip(package)
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "without_package.py"), json.dumps(runs)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = json.loads(result.stdout)
    assert {outcome["package"] for outcome in outcomes} >= {"transformers", "torchtune", "transformer_lens", "hqq",
                                                             "optimum"}
    for outcome in outcomes:
        name = f"{Path(outcome['script']).name} without {outcome['package']}"
        assert outcome["status"] == 2 and "REPRODUCED" not in outcome["stdout"], (name, outcome)
        assert CANNOT_RUN.fullmatch(outcome["stderr"])["package"] == outcome["package"], (name, outcome["stderr"])
