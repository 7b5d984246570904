"""What the newest library releases change, compared with the lock CI installs (.ci/lock/).

CI runs on the lock, so a release nobody here controls never turns it red; this is how the team learns what
a release changed instead of suffering it. ``.ci/watch`` builds a scratch environment with the newest releases,
then this module observes that environment and the locked one the same way and prints what differs:

- finding scripts (findings/*.py: exit 1 reproduced, 0 absent, 2 cannot run) whose exit code moved: a bug
  fixed upstream (a gone-by entry for tests/known_bugs.py), one that came back, one that can no longer run;
- the version-sensitive tests that fail on the newest releases and pass on the lock (new failures to triage);
- sweep cells (model x oracle, a short sweep) whose state moved: a new finding, or one gone;
- causal-LM model types the newest transformers added or dropped (new architectures to fuzz).

Usage: ``python .ci/watch.py observe --python ENV/bin/python --out OBS.json [--sweep-models M,M]``, then
``python .ci/watch.py diff LOCKED.json NEWEST.json``: prints the change report; exit 0 when nothing but
versions moved, 1 when something changed. A step that cannot run at all is an error (exit 2).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The libraries whose releases decide what fuzzkv sees; their versions head the report.
WATCHED = ("torch", "transformers", "transformer-lens", "torchtune", "torchao", "optimum-quanto", "hqq",
           "accelerate", "huggingface-hub", "hypothesis", "ray")
# The tests whose outcome depends on the installed releases (the same list .ci/run runs in every environment).
VERSIONED_TESTS = ("tests/test_repro_scripts.py", "tests/test_tl.py", "tests/test_tl_legacy.py",
                   "tests/test_findings.py", "tests/test_finds_bugs.py", "tests/test_layers.py",
                   "tests/test_versions.py")
SCRIPT_SECONDS = 600  # one finding script; a script past it is recorded as a hang (exit code -1)
SCRIPT_MEANING = {0: "absent", 1: "reproduced", 2: "cannot run", -1: "hung"}
# What a move of a script's exit code means, from (locked, newest).
SCRIPT_MOVES = {(1, 0): "stopped reproducing: fixed upstream? (a GONE_BY entry in tests/known_bugs.py)",
                (0, 1): "reproduces again: a regression of the newest release",
                (2, 1): "runs now and reproduces", (2, 0): "runs now; bug absent"}


@dataclass
class Observation:
    """One environment, observed: what the report compares."""

    versions: dict[str, str] = field(default_factory=dict)
    scripts: dict[str, int] = field(default_factory=dict)  # finding -> exit code
    tests: dict[str, str] = field(default_factory=dict)  # test id -> passed / failed / skipped
    sweep: dict[str, str] = field(default_factory=dict)  # "model oracle" -> cell state
    model_types: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> Observation:
        return cls(**json.loads(path.read_text(encoding="utf-8")))


@dataclass
class Change:
    section: str
    what: str
    meaning: str


def diff(locked: Observation, newest: Observation) -> tuple[list[str], list[Change]]:
    """(the watched libraries that moved, as lines; every behaviour change between the two observations)."""
    moved = [f"{name} {locked.versions.get(name, '-')} -> {newest.versions.get(name, '-')}" for name in WATCHED
             if locked.versions.get(name) != newest.versions.get(name)]
    return moved, [*_script_changes(locked, newest), *_test_changes(locked, newest), *_sweep_changes(locked, newest),
                   *_type_changes(locked, newest)]


def _script_changes(locked: Observation, newest: Observation) -> list[Change]:
    changes = []
    for finding in sorted(set(locked.scripts) | set(newest.scripts)):
        before, after = locked.scripts.get(finding), newest.scripts.get(finding)
        if before == after or before is None or after is None:
            continue
        meaning = SCRIPT_MOVES.get((before, after), f"{SCRIPT_MEANING.get(before, before)} -> "
                                                    f"{SCRIPT_MEANING.get(after, after)}")
        changes.append(Change("finding scripts", f"findings/{finding}.py exit {before} -> {after}", meaning))
    return changes


def _test_changes(locked: Observation, newest: Observation) -> list[Change]:
    return [Change("version-sensitive tests", test, f"{locked.tests.get(test, 'absent')} on the lock, failed on the "
                                                    "newest releases: a new failure to triage")
            for test, outcome in sorted(newest.tests.items())
            if outcome == "failed" and locked.tests.get(test) != "failed"]


def _sweep_changes(locked: Observation, newest: Observation) -> list[Change]:
    changes = []
    for cell in sorted(set(locked.sweep) & set(newest.sweep)):
        before, after = locked.sweep[cell], newest.sweep[cell]
        if before == after:
            continue
        meaning = ("a new failure: triage it (findings/ or the expected table)" if before == "clean"
                   else "no longer fails: fixed upstream?" if after == "clean" else "state moved")
        changes.append(Change("sweep", f"{cell}: {before} -> {after}", meaning))
    return changes


def _type_changes(locked: Observation, newest: Observation) -> list[Change]:
    added = sorted(set(newest.model_types) - set(locked.model_types))
    dropped = sorted(set(locked.model_types) - set(newest.model_types))
    return ([Change("model types", t, "new in the newest transformers: fuzz it (fuzzkv models --all)") for t in added]
            + [Change("model types", t, "dropped by the newest transformers") for t in dropped])


def render(moved: list[str], changes: list[Change]) -> str:
    lines = ["watched releases: " + ("; ".join(moved) if moved else "none moved since the lock")]
    if not changes:
        lines.append("no behaviour changed: the lock can move to these releases as it is")
    for section in dict.fromkeys(change.section for change in changes):
        lines.append(f"{section}:")
        lines += [f"  {c.what}: {c.meaning}" for c in changes if c.section == section]
    return "\n".join(lines)


# -- observing one environment -------------------------------------------------------------------------------------

def observe(python: str, sweep_models: list[str], sweep_examples: int, tests: tuple[str, ...]) -> Observation:
    return Observation(versions=_versions(python), scripts=scripts(python), tests=_tests(python, tests) if tests else {},
                       sweep=_sweep(python, sweep_models, sweep_examples) if sweep_models else {},
                       model_types=_model_types(python))


def _run(python: str, *args: str, timeout: float | None = None,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def _versions(python: str) -> dict[str, str]:
    code = ("import json, importlib.metadata as m\n"
            "print(json.dumps({d.metadata['Name'].lower().replace('_', '-'): d.version for d in m.distributions()}))")
    return json.loads(_run(python, "-c", code).stdout)


def scripts(python: str, folder: Path = ROOT / "findings", env: dict[str, str] | None = None) -> dict[str, int]:
    """finding -> the exit code of its script run by ``python`` (``env``: the scripts' environment)."""
    codes = {}
    for script in sorted(folder.glob("*.py")):
        try:
            codes[script.stem] = _run(python, str(script), timeout=SCRIPT_SECONDS, env=env).returncode
        except subprocess.TimeoutExpired:
            codes[script.stem] = -1
    return codes


def _tests(python: str, tests: tuple[str, ...]) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as scratch:
        junit = Path(scratch) / "junit.xml"
        _run(python, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *tests)
        if not junit.exists():
            raise SystemExit(f"the version-sensitive tests did not run with {python}")
        return outcomes(junit.read_text(encoding="utf-8"))


def outcomes(junit_xml: str) -> dict[str, str]:
    """test id -> passed / failed / skipped, from a JUnit XML report (an error counts as failed)."""
    results = {}
    for case in ET.fromstring(junit_xml).iter("testcase"):
        test = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        results[test] = "failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed"
    return results


def _sweep(python: str, models: list[str], examples: int) -> dict[str, str]:
    with tempfile.TemporaryDirectory() as scratch:
        done = _run(python, "-m", "fuzzkv", "sweep", "--models", ",".join(models), "--max-examples", str(examples),
                    "--json", "--db", f"sqlite:///{scratch}/watch.db")
    if not done.stdout.strip():
        raise SystemExit(f"the sweep did not run with {python}: {done.stderr.strip()[-500:]}")
    matrix = json.loads(done.stdout)
    return {f"{row['model']} {oracle}": cell["state"] for row in matrix["rows"]
            for oracle, cell in row.get("cells", {}).items()}


def _model_types(python: str) -> list[str]:
    code = "import json; from fuzzkv.backends import hf_shrink; print(json.dumps(hf_shrink.causal_lm_types()))"
    return json.loads(_run(python, "-c", code).stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    look = commands.add_parser("observe")
    look.add_argument("--python", required=True)
    look.add_argument("--out", required=True, type=Path)
    look.add_argument("--sweep-models", default="", help="comma-separated registry names; empty: no sweep")
    look.add_argument("--sweep-examples", type=int, default=10)
    look.add_argument("--tests", default=",".join(VERSIONED_TESTS),
                      help="comma-separated test files (default: the version-sensitive ones); empty: none")
    compare = commands.add_parser("diff")
    compare.add_argument("locked", type=Path)
    compare.add_argument("newest", type=Path)
    args = parser.parse_args(argv)
    if args.command == "observe":
        seen = observe(args.python, [m for m in args.sweep_models.split(",") if m], args.sweep_examples,
                       tuple(t for t in args.tests.split(",") if t))
        args.out.write_text(json.dumps(asdict(seen), indent=1, sort_keys=True), encoding="utf-8")
        return 0
    moved, changes = diff(Observation.load(args.locked), Observation.load(args.newest))
    print(render(moved, changes))
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
