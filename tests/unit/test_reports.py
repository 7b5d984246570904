"""The reporters on real runs of the fake: console, JSON, JUnit, the Markdown summary and the HTML report
(rendered to a file and read as text; the browser checks stay in tests/test_report.py)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from fuzzkv.db import MemoryStore
from fuzzkv.reports.console import ConsoleReporter
from fuzzkv.reports.html import write_report
from fuzzkv.reports.json_report import JsonReporter
from fuzzkv.reports.junit import JunitReporter
from fuzzkv.reports.summary import SummaryReporter
from tests.fake_backend import fake_in_catalogue
from tests.unit.conftest import fuzz_fake


@dataclass
class Reported:
    """What every reporter made of one run."""

    console: str
    repro_dir: Path
    json: dict
    junit: ET.Element
    summary: str
    store: MemoryStore


def report(tmp_path: Path, *bugs: str) -> Reported:
    console, out = io.StringIO(), io.StringIO()
    reporters = (ConsoleReporter(console, tty=False, repro_dir=tmp_path / "repro"), JsonReporter(out),
                 JunitReporter(tmp_path / "junit.xml", tmp_path / "repro"),
                 SummaryReporter(tmp_path / "summary.md", tmp_path / "repro"))
    store = MemoryStore()

    def emit(event: object) -> None:
        for reporter in reporters:
            reporter(event)

    fuzz_fake(*bugs, oracles=("decode", "batch"), store=store, emit=emit)
    return Reported(console.getvalue(), tmp_path / "repro", json.loads(out.getvalue()),
                    ET.parse(tmp_path / "junit.xml").getroot(), (tmp_path / "summary.md").read_text(), store)


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Reported:
    with fake_in_catalogue():  # set up before the tier's own fixture: the catalogue is patched here too
        return report(tmp_path_factory.mktemp("broken"), "positions-off-by-one")


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Reported:
    with fake_in_catalogue():
        return report(tmp_path_factory.mktemp("clean"))


def test_the_console_names_the_failure_its_minimal_case_and_its_script(broken, clean):
    text = broken.console
    assert text.startswith("fuzzkv ") and "model fake (full scale), backend fake (a test double, not a model)" in text
    assert "canaries [fake] caught 4/4" in text and "\r" not in text  # no progress redraws off a terminal
    assert "FAILURE [mismatch] [fake] decode (cached vs uncached): max |diff|" in text
    assert "  minimal case: batch 1 (lengths " in text and "case JSON" not in text  # -v prints the JSON
    [script] = broken.repro_dir.glob("decode-*.py")  # saved, named, never pasted into the output
    assert f"  reproduce: python {script} (exits 1 while the bug is there)" in text
    assert script.read_text().startswith("# fuzzkv reproduction on the FAKE") and "# fuzzkv reproduction" not in text
    assert "  batch [fake]: ok after" in text and "1 failure(s) (1 mismatch) in" in text
    assert "FAILURE" not in clean.console and "no failures in" in clean.console


def test_the_json_report_holds_the_run_as_one_object(broken, clean):
    data = broken.json
    assert data["settings"]["model"] == "fake" and data["backend"] == "fake (a test double, not a model)"
    assert {key: value["failures"] for key, value in data["oracles"].items()} == {"decode@fake": 1, "batch@fake": 0}
    [failure] = data["failures"]
    assert (failure["oracle"], failure["backend"], failure["kind"], failure["novelty"]) == ("decode", "fake", "mismatch", "new")
    assert len(failure["case"]["prompts"]) == 1 and failure["max_abs_diff"] > failure["tolerance"]
    assert data["canaries"]["fake"]["missed"] == [] and data["tolerances"]["fake"]["source"].startswith("calibrated")
    assert data["blind"] == {} and data["examples"] > 0 and data["error"] is None
    assert clean.json["failures"] == [] and clean.json["oracles"]["decode@fake"]["failures"] == 0


def test_junit_has_one_case_per_oracle_and_the_failure_with_its_saved_script(broken, clean):
    suite = broken.junit
    assert (suite.get("name"), suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("fuzzkv fake", "2", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"decode", "batch"} and cases["decode"].get("classname") == "fuzzkv.fake.fake"
    [failure] = cases["decode"].findall("failure")
    assert failure.get("type") == "mismatch" and "minimal case: batch 1" in (failure.text or "")
    assert "root cause 1 of 1, seen by 1 oracle(s): decode" in (failure.text or "")
    # The script is a file beside the console's (the same one), named in a few lines, never pasted into the XML.
    [script] = broken.repro_dir.glob("decode-*.py")
    assert f"reproduce: python {script} (exits 1 while the bug is there)" in (failure.text or "")
    assert "# fuzzkv reproduction" not in (failure.text or "") and len((failure.text or "").splitlines()) <= 6
    assert not cases["batch"].findall("failure")
    assert clean.junit.get("failures") == "0"


def test_the_markdown_summary_lists_new_failures_with_escaped_cells(broken, clean):
    text = broken.summary
    assert text.startswith("### fuzzkv: fake (full, fake (a test double, not a model))")
    assert "**1 new or re-opened, 0 known** (1 root cause)" in text and "**New failures**" in text
    assert "| 1 | decode | fake | decode (cached vs uncached): max \\|diff\\|" in text  # a pipe in a cell is escaped
    [script] = broken.repro_dir.glob("decode-*.py")
    assert f"| `python {script}` |" in text and "# fuzzkv reproduction" not in text
    assert "**clean**" in clean.summary and "| decode |" not in clean.summary


def test_the_html_report_is_one_escaped_file_with_the_failure_its_chart_and_script(broken, clean, tmp_path):
    [found] = broken.store.failures()
    store = MemoryStore()  # the run's failure, and one full of markup
    store.save_failure(replace(found, id=None))
    store.save_failure(replace(found, id=None, fingerprint="hostile", kind="error", error="<script>alert(1)</script>"))
    html = write_report(store, tmp_path / "report" / "index.html").read_text()
    assert html.count('<tr class="failure-row"') == 2 and 'data-model="fake"' in html
    assert html.count("<script") == 1 and "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # stored text is text
    assert "http://" not in html and "https://" not in html  # nothing fetched when viewed
    assert '<svg class="chart positions"' in html and 'class="status status-open"' in html
    assert "# fuzzkv reproduction on the FAKE backend" in html and "Where it breaks: not measured" in html
    assert "No stored failures" in write_report(clean.store, tmp_path / "clean.html").read_text()


def test_calibration_and_canaries_show_progress_on_a_terminal_and_nothing_on_a_pipe():
    # A full-size model spends minutes calibrating before its first example: a terminal sees each step move.
    from fuzzkv.reports.console import ConsoleReporter
    from tests.unit.conftest import fuzz_fake

    terminal, pipe = io.StringIO(), io.StringIO()
    shown = [ConsoleReporter(terminal, tty=True), ConsoleReporter(pipe, tty=False)]
    _, recorded, _ = fuzz_fake(oracles=("decode",), max_examples=5, emit=lambda e: [show(e) for show in shown])
    steps = [(e.step, e.done, e.total) for e in recorded.of("Preparing")]
    calibrating = [s for s in steps if s[0] == "calibrating"]
    assert calibrating and [done for _, done, _ in calibrating] == list(range(calibrating[0][2]))
    assert [s for s in steps if s[0] == "checking canaries"]
    assert "\r\033[K  calibrating [fake]: 0 of " in terminal.getvalue()
    assert "\r\033[K  checking canaries [fake]: 0 of 4 done" in terminal.getvalue()
    assert "calibrating" not in pipe.getvalue() and "\r" not in pipe.getvalue()
