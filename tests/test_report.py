"""The HTML report, checked for real in headless Chromium: what a person sees, and that
hostile text stored in a failure (a model name, an error, a script) cannot execute."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fuzzkv.backends.loader import load_lanes
from fuzzkv.config import RunConfig
from fuzzkv.db import open_store
from fuzzkv.reports.html import write_report
from fuzzkv.runner import run
from tests.conftest import Recorder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAYLOAD = "<script>window.__pwned = 1</script>"
ERROR_PAYLOAD = '<img src=x onerror="window.__pwned = 2">'
SCRIPT_PAYLOAD = "</pre><script>window.__pwned = 3</script><pre>"


def _store_with_failures(tmp_path: Path) -> str:
    """A real run that finds a planted bug, plus a stored failure full of markup."""
    url = f"sqlite:///{tmp_path / 'fuzzkv.db'}"
    config = RunConfig(model="tests.broken_models:off_by_one_positions", scale="tiny", db_url=url,
                       oracles=("decode",), max_examples=40)
    store = open_store(url)
    try:
        run(config, store, Recorder().append, load_lanes(config))
        real = store.failures()[0]
        hostile = replace(real, fingerprint="hostile", model=PAYLOAD, error=ERROR_PAYLOAD, kind="error",
                          reproduction=SCRIPT_PAYLOAD, tolerance_source='"><svg onload="window.__pwned = 4">',
                          versions={**real.versions, "torch": PAYLOAD}, diagnosis={}, id=None)
        store.save_failure(hostile)
    finally:
        store.close()
    return url


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("report")
    url = _store_with_failures(tmp_path)
    out = tmp_path / "out" / "index.html"
    done = subprocess.run([sys.executable, "-m", "fuzzkv", "report", "--db", url, "--out", str(out)],
                          capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert f"HTML report: {out}" in done.stdout
    return out


def test_the_report_is_one_self_contained_file_with_everything_escaped(report):
    html = report.read_text()
    assert "http://" not in html and "https://" not in html and "<link" not in html  # nothing fetched at view time
    assert PAYLOAD not in html and ERROR_PAYLOAD not in html and SCRIPT_PAYLOAD not in html
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in html
    assert html.count("<script") == 1  # the report's own, and no other


@pytest.fixture(scope="module")
def page(report):
    if CHROMIUM is None:
        if os.environ.get("FUZZKV_CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
        pytest.skip("needs Debian's chromium package (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        context = browser.new_context()
        context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(report.as_uri())
        page.errors = errors
        yield page
        browser.close()


def test_a_person_sees_the_failure_rows_a_chart_and_the_reproduction(page):
    rows = page.locator("#failure-table tbody tr")
    assert rows.count() == 2
    assert page.locator("#failure-table tbody tr", has_text="off_by_one_positions").is_visible()
    chart = page.locator("svg.chart.positions").first
    assert chart.is_visible() and chart.locator("circle.pt.bad").count() >= 1
    assert chart.locator("line.line-tolerance").count() == 1
    assert page.locator("svg.chart.history").first.is_visible()
    assert "layer 0, cached keys" in page.locator(".where").first.inner_text()
    assert page.locator("table.layers td.first").first.inner_text().strip()
    script = page.locator("pre.repro").first.inner_text()
    assert "import torch" in script and "AutoModelForCausalLM" in script
    assert page.errors == []


def test_hostile_text_is_shown_as_text_and_never_runs(page):
    assert page.evaluate("typeof window.__pwned") == "undefined"
    text = page.locator("body").inner_text()
    assert PAYLOAD in text and ERROR_PAYLOAD in text and SCRIPT_PAYLOAD in text
    assert page.locator("img").count() == 0


def test_the_table_filters_and_sorts(page):
    rows = page.locator("#failure-table tbody tr")
    page.select_option("#filter-oracle", "decode")
    page.select_option("#filter-model", PAYLOAD)
    assert rows.locator("visible=true").count() == 1
    assert page.locator("#shown-count").inner_text() == "1 shown"
    page.select_option("#filter-model", "")
    assert rows.locator("visible=true").count() == 2
    header = page.locator("#failure-table th", has_text="id").first
    header.click()
    header.click()  # descending: the hostile row, stored second, comes first
    assert rows.first.locator("td").first.inner_text().strip() == "2"


def test_the_copy_button_puts_the_script_on_the_clipboard(page):
    page.locator("button.copy").first.click()
    page.wait_for_function("document.querySelector('button.copy').textContent === 'Copied'")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator("pre.repro").first.text_content()


@pytest.mark.nightly  # the unit tier's test_faults covers the flaky report on the fake backend
def test_a_flaky_failure_shows_both_measurements(tmp_path):
    from tests.conftest import fuzz

    # A fixed tolerance: calibration and canaries would spend the warm-up calls.
    _, _, memory = fuzz("tests.broken_models:warming_up", oracles=("decode",), max_examples=40, tolerance=1e-3)
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        for record in memory.failures():
            store.save_failure(replace(record, id=None))
        html = write_report(store, tmp_path / "r.html").read_text()
    finally:
        store.close()
    assert "Flaky:</b> it did not fail again when re-run as is: first mismatch" in html
    assert 'class="status status-flaky"' in html


def test_an_empty_store_gives_a_report_that_says_so(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        out = write_report(store, tmp_path / "r.html")
    finally:
        store.close()
    assert "No stored failures" in out.read_text()


def test_report_bad_input_is_one_line_and_exit_2(tmp_path):
    cwd = Path(__file__).parent.parent
    missing = subprocess.run([sys.executable, "-m", "fuzzkv", "report", "--db", f"sqlite:///{tmp_path / 'no.db'}",
                              "--out", str(tmp_path / "r.html")], capture_output=True, text=True, cwd=cwd)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    store.close()
    into_dir = subprocess.run([sys.executable, "-m", "fuzzkv", "report", "--db", f"sqlite:///{tmp_path / 'x.db'}",
                               "--out", str(tmp_path)], capture_output=True, text=True, cwd=cwd)
    assert into_dir.returncode == 2 and "Error:" in into_dir.stderr
