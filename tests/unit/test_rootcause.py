"""Root causes (issue #32): one planted bug seen by several oracles is ONE root cause in the console (concise by
default, scripts saved to files), the JSON report, the store's listing, the HTML report and the API's message."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from fuzzkv import api, rootcause
from fuzzkv.db import MemoryStore
from fuzzkv.events import RunFinished
from fuzzkv.reports import failures as failure_views
from fuzzkv.reports import scripts
from fuzzkv.reports.console import ConsoleReporter
from fuzzkv.reports.html import write_report
from fuzzkv.reports.json_report import JsonReporter
from fuzzkv.reports.junit import JunitReporter
from fuzzkv.reports.summary import SummaryReporter
from tests.fake_backend import fake_in_catalogue
from tests.unit.conftest import fuzz_fake

ORACLES = ("decode", "chunked", "generate")  # each finds the logit offset, each with its own minimal case


@dataclass
class Seen:
    consoles: dict[int, str]  # verbosity -> what the console printed
    repro_dirs: dict[int, Path]
    json: dict
    store: MemoryStore
    finished: RunFinished
    result: api.Result


@pytest.fixture(scope="module")
def offset(tmp_path_factory) -> Seen:
    """One run of the fake with a bug that decode, chunked and generate all see, printed at every verbosity."""
    with fake_in_catalogue():
        streams = {level: io.StringIO() for level in (-1, 0, 1)}
        dirs = {level: tmp_path_factory.mktemp(f"repro{level}") for level in streams}
        out = io.StringIO()
        reporters = [ConsoleReporter(streams[level], tty=False, verbosity=level, repro_dir=dirs[level])
                     for level in streams]
        collected = api._Collector(None)
        reporters += [JsonReporter(out), collected, JunitReporter(dirs[0] / "junit.xml", dirs[0]),
                      SummaryReporter(dirs[0] / "summary.md", dirs[0])]

        def emit(event: object) -> None:
            for reporter in reporters:
                reporter(event)

        finished, _, store = fuzz_fake("logit-offset-5pct", oracles=ORACLES, emit=emit)
    return Seen({level: s.getvalue() for level, s in streams.items()}, dirs, json.loads(out.getvalue()),
                store, finished, collected.result("fake", finished))


def test_three_oracles_seeing_one_bug_are_one_root_cause_in_under_40_lines(offset):
    assert sorted(f.verdict.oracle for f in offset.finished.failures) == sorted(ORACLES)
    text = offset.consoles[0]
    lines = text.splitlines()
    assert len(lines) < 40, text
    assert text.count("ROOT CAUSE") == 1 and "ROOT CAUSE 1 of 1 [mismatch] [fake]: decode" in text
    assert "  seen by 3 oracle(s): decode, chunked, generate (stored as failures 1, 2, 3)" in lines
    assert "  minimal case: batch 1 (lengths 2)" in text and "  where it breaks: not measured (" in text
    assert "3 failure(s) (3 mismatch) in" in lines[-1] and lines[-1].endswith("; 1 root cause")
    assert "# fuzzkv reproduction" not in text and "case JSON" not in text  # scripts are files, not output
    # every failure keeps its own saved script, named in the root cause's lines
    saved = sorted(offset.repro_dirs[0].glob("*.py"))
    assert len(saved) == 3 and all(str(path) in text for path in saved)
    assert all(path.read_text().startswith("# fuzzkv reproduction") for path in saved)
    assert f"  reproduce: python {offset.repro_dirs[0] / 'decode-'}" in text


def test_quiet_prints_one_line_per_root_cause_and_the_verdict(offset):
    lines = offset.consoles[-1].splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("ROOT CAUSE 1 [mismatch] [fake] decode, chunked, generate: decode (cached vs uncached)")
    assert f"python {offset.repro_dirs[-1]}" in lines[0] and lines[1].endswith("; 1 root cause")


def test_verbose_adds_each_failures_case_json_where_and_script(offset):
    text = offset.consoles[1]
    assert text.count("    case JSON: {") == 3 and text.count("    reproduce: python ") == 3
    assert text.count("    where it breaks: ") == 3 and text.count("ROOT CAUSE") == 1


def test_the_json_report_keeps_every_failure_and_lists_the_root_cause(offset):
    data = offset.json
    assert len(data["failures"]) == 3 and all(f["reproduction"].startswith("# fuzzkv") for f in data["failures"])
    [cause] = data["root_causes"]
    assert cause["oracles"] == list(ORACLES) and cause["failures"] == [0, 1, 2]
    assert cause["stored_ids"] == [1, 2, 3] and cause["fingerprints"] == [f["fingerprint"] for f in data["failures"]]
    assert (cause["kind"], cause["backend"], cause["where"]) == ("mismatch", "fake", {"position": 1})


def test_the_store_lists_each_failure_under_its_root_cause(offset):
    records = offset.store.failures()
    assert len(records) == 3 and len({r.fingerprint for r in records}) == 3  # stored as before: one each
    lines = failure_views.table(records).splitlines()
    assert lines[0].startswith("  id  status") and lines[1].startswith("root cause 1 [mismatch] fake (fake): 3 oracle(s) "
                                                                      "decode, chunked, generate;")
    assert [line.split()[0] for line in lines[2:]] == ["1", "2", "3"] and len(lines) == 5


def test_the_html_report_has_one_section_per_root_cause_with_its_oracles(offset, tmp_path):
    html = write_report(offset.store, tmp_path / "index.html").read_text()
    assert html.count('<section class="root-cause"') == 1 and html.count('<section class="failure"') == 3
    assert "seen by 3 oracle(s): decode, chunked, generate" in html


def test_the_api_message_is_a_few_lines_per_root_cause_with_script_paths(offset, tmp_path):
    with pytest.raises(api.FindingsFound) as raised:
        offset.result.raise_for_findings(repro_dir=tmp_path)
    message = str(raised.value)
    assert message.startswith("fuzzkv found 3 KV-cache failure(s) in fake, 1 root cause:")
    assert "root cause 1: seen by 3 oracle(s): decode, chunked, generate" in message
    assert len(message.splitlines()) < 10 and "# fuzzkv reproduction" not in message
    paths = sorted(tmp_path.glob("*.py"))
    assert len(paths) == 3 and all(str(p) in message for p in paths)
    assert all(f.script_path for f in raised.value.findings)


def test_the_key_tells_apart_kind_shape_and_where():
    case = {"prompts": [[0, 0]], "padding_side": "left", "max_new_tokens": 1}
    base = {"model": "m", "backend": "hf", "kind": "mismatch", "case": case, "diagnosis": None,
            "metrics": {"first_bad_position": 1}}
    same_reach = dict(case, prompts=[[0]], max_new_tokens=2)  # generate's split of the same 3 positions
    assert rootcause.key(**base) == rootcause.key(**dict(base, case=same_reach))
    assert rootcause.key(**base) != rootcause.key(**dict(base, kind="error"))
    assert rootcause.key(**base) != rootcause.key(**dict(base, case=dict(case, prompts=[[0], [0, 0]])))
    assert rootcause.key(**base) != rootcause.key(**dict(base, metrics={"first_bad_position": 2}))
    measured = {"first": {"layer": 0, "part": "keys", "position": 1, "relative_difference": 0.3}}
    other = {"first": {"layer": 0, "part": "keys", "position": 1, "relative_difference": 0.7}}
    assert rootcause.key(**dict(base, diagnosis=measured)) == rootcause.key(**dict(base, diagnosis=other))
    assert rootcause.key(**dict(base, diagnosis=measured)) != rootcause.key(**base)


def test_scripts_are_saved_beside_the_database_file_by_id(tmp_path):
    assert scripts.default_folder("sqlite:///some/dir/fuzzkv.db") == Path("some/dir/fuzzkv-repro")
    assert scripts.default_folder("memory:") == Path("fuzzkv-repro")
    assert scripts.file_name(stored_id=4, oracle="decode", fingerprint="ab", by_id=True) == "failure-4.py"
    assert scripts.file_name(stored_id=4, oracle="decode", fingerprint="ab", by_id=False) == "decode-ab.py"


def test_junit_and_the_markdown_summary_give_one_root_cause_with_its_oracles(offset):
    # JUnit keeps a test case per oracle (CI shows each), each failure naming the root cause it shares.
    suite = ET.parse(offset.repro_dirs[0] / "junit.xml").getroot()
    texts = {case.get("name"): case.find("failure").text for case in suite.iter("testcase")}
    assert set(texts) == set(ORACLES)
    assert all(text.startswith("root cause 1 of 1, seen by 3 oracle(s): decode, chunked, generate") for text in texts.values())
    assert all("# fuzzkv reproduction" not in text and "reproduce: python " in text for text in texts.values())
    summary = (offset.repro_dirs[0] / "summary.md").read_text()
    assert "(1 root cause)" in summary
    [row] = [line for line in summary.splitlines() if line.startswith("| 1, 2, 3 |")]
    assert row.startswith("| 1, 2, 3 | decode, chunked, generate | fake | decode (cached vs uncached)")
