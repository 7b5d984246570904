"""The documentation's Python and pytest examples are executed as written, so they cannot rot; its action examples
name only the action's declared inputs; the README stays a short guide whose examples are the ones the docs run, and
every relative link in the README and docs/ resolves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
PYTHON_API = DOCS / "reference" / "python-api.md"  # the API reference: every python block of it runs
PYTEST_HOWTO = DOCS / "how-to" / "pytest-plugin.md"
CI_HOWTO = DOCS / "how-to" / "ci.md"


def section(path: Path, heading: str) -> str:
    """The text under ``## heading`` of a docs page, up to the next ``## `` heading or the page's end."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", path.read_text(), re.S | re.M)
    assert match, (path, heading)
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def subprocess_env() -> dict[str, str]:
    """The suite's environment (one torch thread: conftest) without fuzzkv's own variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUZZKV_")}
    return {**env, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_the_python_api_section_runs_as_written(tmp_path):
    code = "\n".join(blocks(PYTHON_API.read_text(), "python"))
    assert "fuzzkv.fuzz(" in code and "fuzzkv.check(" in code
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=subprocess_env(), timeout=900)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # What its comments promise: the finding's summary, minimal case and diagnosis, and a script that reproduces.
    assert "decode (cached vs uncached): max |diff|" in ran.stdout and '"prompts": [[0]]' in ran.stdout
    script = subprocess.run([sys.executable, "repro.py"], capture_output=True, text=True, cwd=tmp_path,
                            env=subprocess_env(), timeout=600)
    assert script.returncode == 1 and "FAILS" in script.stdout, script.stdout + script.stderr


@pytest.mark.slow
def test_the_pytest_section_runs_as_written(tmp_path):
    [test_module] = blocks(section(PYTEST_HOWTO, "The fixture and the marker"), "python")
    (tmp_path / "test_readme_example.py").write_text(test_module)
    ran = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(tmp_path)],
                         capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=900)
    assert ran.returncode == 0 and "1 passed" in ran.stdout, ran.stdout + ran.stderr


def test_the_action_examples_use_only_declared_inputs():
    declared = set(yaml.safe_load((ROOT / "action.yml").read_text())["inputs"])
    examples = [yaml.safe_load(block) for block in blocks(section(CI_HOWTO, "Nightly fuzzing in CI"), "yaml")]
    uses = [step for workflow in examples for job in workflow["jobs"].values() for step in job["steps"]
            if step.get("uses", "").startswith("fuzzkv/fuzzkv@")]
    assert len(uses) == 2 and {step["with"].get("mode", "fuzz") for step in uses} == {"fuzz", "replay"}
    for step in uses:
        assert set(step["with"]) <= declared, set(step["with"]) - declared


def test_the_readme_is_a_short_guide():
    lines = README.splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move the detail into docs/"


def test_the_readme_examples_are_the_ones_the_docs_run():
    # The README's Python examples are excerpts of the blocks the two tests above execute, so they cannot rot either.
    executed = blocks(PYTHON_API.read_text(), "python") + blocks(section(PYTEST_HOWTO, "The fixture and the marker"),
                                                                  "python")
    shown = blocks(README, "python")
    assert len(shown) == 2
    for block in shown:
        assert any(block in run for run in executed), block


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens and underscores dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    return {_slug(heading) for heading in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_in_the_readme_and_docs_resolves():
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    assert len(pages) > 20
    broken = []
    for page in pages:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # http(s), mailto: not a file; an anchor-only link stays on its page
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve()
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)
