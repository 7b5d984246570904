"""The JUnit XML reporter (``--junit PATH``): one test case per oracle and backend lane, so CI
systems show fuzzkv's results natively. A failing case carries the minimal case and the
reproduction script."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from fuzzkv import events


class JunitReporter:
    """Collects run events; writes the XML file when the run finishes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.model = "model"
        self.finished: list[events.OracleFinished] = []
        self.failures: dict[tuple[str, str], list[events.FailureFound]] = {}

    def __call__(self, event) -> None:
        if isinstance(event, events.RunStarted):
            self.model = event.settings["model"]
        elif isinstance(event, events.FailureFound):
            self.failures.setdefault((event.verdict.oracle, event.lane), []).append(event)
        elif isinstance(event, events.OracleFinished):
            self.finished.append(event)
        elif isinstance(event, events.RunFinished):
            self.write(event)

    def write(self, run: events.RunFinished) -> None:
        failed = sum(1 for done in self.finished if self.failures.get((done.oracle, done.lane)))
        suite = ET.Element("testsuite", name=f"fuzzkv {self.model}", tests=str(len(self.finished) + bool(run.error)),
                           failures=str(failed), errors=str(int(bool(run.error))), time=f"{run.elapsed:.3f}")
        if run.error:  # the run stopped on an error: one errored test case says so
            stopped = ET.SubElement(suite, "testcase", classname=f"fuzzkv.{self.model}", name="run")
            ET.SubElement(stopped, "error", type="FuzzkvError", message=run.error)
        for done in self.finished:
            case = ET.SubElement(suite, "testcase", classname=f"fuzzkv.{self.model}.{done.lane}",
                                 name=done.oracle, time=f"{done.elapsed:.3f}")
            found_here = self.failures.get((done.oracle, done.lane), [])
            for found in found_here:
                failure = ET.SubElement(case, "failure", type=found.verdict.kind, message=found.verdict.summary())
                failure.text = (f"minimal case: {found.verdict.case.describe()}\ncase JSON: "
                                f"{found.verdict.case.to_json()}\n\n{found.reproduction}")
            if done.incomplete and not found_here:  # tested less than asked: not a pass
                ET.SubElement(case, "skipped", message=f"INCOMPLETE: {done.incomplete}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(suite).write(self.path, encoding="utf-8", xml_declaration=True)
