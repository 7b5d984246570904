"""--junit writes JUnit XML that CI systems read: one test case per oracle, failures with the minimal case."""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.nightly  # the unit tier's test_reports covers the JUnit output on the fake backend
def test_junit_xml_has_a_case_per_oracle_and_the_minimal_failure(tmp_path):
    report = tmp_path / "out" / "fuzzkv.xml"
    result = subprocess.run(
        [sys.executable, "-m", "fuzzkv", "run", "--model", "tests.broken_models:off_by_one_positions",
         "--oracle", "decode", "--oracle", "cache-impl", "--max-examples", "20", "--db",
         f"sqlite:///{tmp_path / 'x.db'}", "--junit", str(report)],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert result.returncode == 1, result.stderr
    suite = ET.parse(report).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"decode", "cache-impl"}
    assert cases["cache-impl"].find("failure") is None
    failure = cases["decode"].find("failure")
    assert failure.get("type") == "mismatch" and "max |diff|" in failure.get("message")
    assert "minimal case: batch 1 (lengths 1), left-padded, 2 new token(s)" in failure.text
    assert "reproduce: python " in failure.text and "# fuzzkv reproduction" not in failure.text
