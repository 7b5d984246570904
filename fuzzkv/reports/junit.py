"""The JUnit XML reporter (``--junit PATH``): one test case per oracle and backend lane, so CI
systems show fuzzkv's results natively. A failing case says, in a few lines, its root cause (the oracles that saw
the same bug, :mod:`fuzzkv.rootcause`), its minimal case, where it breaks and the path of its saved reproduction
script (written as the console writes it, never pasted into the XML)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from fuzzkv import events, rootcause
from fuzzkv.reports import scripts


class JunitReporter:
    """Collects run events; writes the XML file when the run finishes."""

    def __init__(self, path: str | Path, repro_dir: str | Path | None = None):
        self.path = Path(path)
        self.scripts = scripts.RunScripts(repro_dir)
        self.model = "model"
        self.finished: list[events.OracleFinished] = []
        self.found: list[events.FailureFound] = []

    def __call__(self, event) -> None:
        if isinstance(event, events.RunStarted):
            self.model = event.settings["model"]
            self.scripts.started(event.settings)
        elif isinstance(event, events.FailureFound):
            self.found.append(event)
        elif isinstance(event, events.OracleFinished):
            self.finished.append(event)
        elif isinstance(event, events.RunFinished):
            self.write(event)

    def write(self, run: events.RunFinished) -> None:
        failing = {(found.verdict.oracle, found.lane) for found in self.found}
        failed = sum(1 for done in self.finished if (done.oracle, done.lane) in failing)
        suite = ET.Element("testsuite", name=f"fuzzkv {self.model}", tests=str(len(self.finished) + bool(run.error)),
                           failures=str(failed), errors=str(int(bool(run.error))), time=f"{run.elapsed:.3f}")
        if run.error:  # the run stopped on an error: one errored test case says so
            stopped = ET.SubElement(suite, "testcase", classname=f"fuzzkv.{self.model}", name="run")
            ET.SubElement(stopped, "error", type="FuzzkvError", message=run.error)
        texts = self._failure_texts()
        for done in self.finished:
            case = ET.SubElement(suite, "testcase", classname=f"fuzzkv.{self.model}.{done.lane}",
                                 name=done.oracle, time=f"{done.elapsed:.3f}")
            found_here = [found for found in self.found if (found.verdict.oracle, found.lane) == (done.oracle, done.lane)]
            for found in found_here:
                failure = ET.SubElement(case, "failure", type=found.verdict.kind, message=found.verdict.summary())
                failure.text = texts[id(found)]
            if done.incomplete and not found_here:  # tested less than asked: not a pass
                ET.SubElement(case, "skipped", message=f"INCOMPLETE: {done.incomplete}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(suite).write(self.path, encoding="utf-8", xml_declaration=True)

    def _failure_texts(self) -> dict[int, str]:
        """Each failure's text (by the event's id): its root cause, minimal case, where it breaks, its script."""
        groups = rootcause.group(self.found, lambda found: rootcause.of_event(found, self.model))
        texts = {}
        for number, members in enumerate(groups, 1):
            oracles = rootcause.oracles_of(members, lambda found: found.verdict.oracle)
            for found in members:
                lines = [f"root cause {number} of {len(groups)}, seen by {len(oracles)} oracle(s): {', '.join(oracles)}",
                         f"minimal case: {found.verdict.case.describe()}", f"case JSON: {found.verdict.case.to_json()}"]
                broken = rootcause.where_it_breaks(found.diagnosis)
                lines += [f"where it breaks: {broken}"] if broken else []
                lines.append(f"reproduce: {self._script(found)}")
                texts[id(found)] = "\n".join(lines)
        return texts

    def _script(self, found: events.FailureFound) -> str:
        try:
            path = self.scripts.save(found)
        except OSError as exc:
            path, why = None, f"could not save it: {exc}"
        else:
            why = "no script"
        if path is not None:
            return f"python {path} (exits 1 while the bug is there)"
        return f"fuzzkv show {found.stored_id} --script ({why})" if found.stored_id else why
