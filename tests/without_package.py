"""Runs findings scripts in one interpreter, each as if one package it imports were not installed (or not at all
blocked): ``python tests/without_package.py '[[SCRIPT, PACKAGE or null], ...]'`` prints, as JSON, each run's exit
status and output.

For tests/test_finding_scripts.py: a script whose guard works exits 2 at its imports, so running them in one process
(torch imported once, here) takes a second instead of a torch import per script. A blocked package raises the
ModuleNotFoundError of a package that is not installed, whatever imports it, for as long as that script runs;
the modules the scripts import stay imported for the next ones, as in one program.
An exception that escapes a script goes to the excepthook it installed, as in its own process.
"""

from __future__ import annotations

import io
import json
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout

import torch  # noqa: F401 - every script imports it first: loaded once, for all of them


class NotInstalled:
    """A meta path finder under which ``package`` and its submodules are missing."""

    def __init__(self, package: str):
        self.package = package

    def find_spec(self, name, path=None, target=None):
        if name == self.package or name.startswith(self.package + "."):
            raise ModuleNotFoundError(f"No module named {self.package!r}", name=self.package)
        return None


def run(script: str, package: str | None) -> dict:
    hook, finders = sys.excepthook, list(sys.meta_path)
    hidden = {}  # the blocked package's modules already imported, put back afterwards (what the scripts imported
    # otherwise stays: some packages register operators or types that a second import would register again)
    if package is not None:
        hidden = {name: module for name, module in sys.modules.items()
                  if name == package or name.startswith(package + ".")}
        for name in hidden:
            del sys.modules[name]
        sys.meta_path.insert(0, NotInstalled(package))
    stdout, stderr = io.StringIO(), io.StringIO()
    try:
        with redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                runpy.run_path(script, run_name="__main__")
                status = 0
            except SystemExit as exit:
                status = exit.code
            except BaseException:  # noqa: BLE001 - what the interpreter would do: the script's excepthook, else 1
                try:
                    sys.excepthook(*sys.exc_info())
                    status = 1
                except SystemExit as exit:
                    status = exit.code
    finally:
        sys.excepthook, sys.meta_path[:] = hook, finders
        sys.modules.update(hidden)
    if status is None:
        status = 0
    elif not isinstance(status, int):  # sys.exit("message"): the message to stderr, status 1
        stderr.write(f"{status}\n")
        status = 1
    return {"script": script, "package": package, "status": status, "stdout": stdout.getvalue(),
            "stderr": stderr.getvalue()}


if __name__ == "__main__":
    print(json.dumps([run(script, package) for script, package in json.loads(sys.argv[1])]))
