"""The Markdown summary reporter (``run --summary PATH``): what a CI job summary shows.

It appends, so several runs (one per model in a matrix job) can share one file such as
``$GITHUB_STEP_SUMMARY``. New and re-opened failures come first: they are what fails a
nightly job under ``--fail-on new``; known ones are listed so nothing is hidden.
"""

from __future__ import annotations

from pathlib import Path

from fuzzkv import events

HEADINGS = {"new": "New failures", "reopened": "Re-opened failures (were marked fixed)",
            "known": "Known failures (stored before, still open)",
            "flaky": "Flaky (failed, then passed when re-run as is: stored, not counted as failures)"}


class SummaryReporter:
    """Collects a run's failures; appends one Markdown section when the run finishes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.model = "model"
        self.found: list[events.FailureFound] = []

    def __call__(self, event) -> None:
        if isinstance(event, events.RunStarted):
            self.model = f"{event.settings['model']} ({event.size(word='')}, {event.backend})"
        elif isinstance(event, events.FailureFound):
            self.found.append(event)
        elif isinstance(event, events.RunFinished):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(markdown(self.model, event, self.found))


def markdown(model: str, run: events.RunFinished, found: list[events.FailureFound]) -> str:
    news, flaky = sum(f.is_news for f in found), sum(f.is_flaky for f in found)
    known = len(found) - news - flaky
    verdict = f"{news} new or re-opened, {known} known" + (f", {flaky} flaky" if flaky else "") if found else (
        "nothing tested" if run.untested else "incomplete" if run.incomplete else "clean")
    lines = [f"### fuzzkv: {_cell(model)}", "",
             f"{run.examples} examples in {run.elapsed:.0f} s: **{verdict}**.", ""]
    if run.error:
        lines += [f"**Run stopped by an error:** {_cell(run.error)}", ""]
    for lane, why in run.blind.items():
        lines += [f"**BLIND ({_cell(lane)}), not clean:** {_cell(why)}", ""]
    for key, why in run.incomplete.items():
        lines += [f"**INCOMPLETE ({_cell(key)}), not clean:** {_cell(why)}", ""]
    for novelty, heading in HEADINGS.items():
        group = [f for f in found if ("flaky" if f.is_flaky else f.novelty) == novelty]
        if group:
            lines += [f"**{heading}**", "", "| id | oracle | backend | what | minimal case |", "|---|---|---|---|---|"]
            lines += [f"| {f.stored_id} | {f.verdict.oracle} | {f.lane} | "
                      f"{'FLAKY: ' + _cell(f.recheck) if f.is_flaky else _cell(f.verdict.summary())} | "
                      f"`{_cell(f.verdict.case.describe())}` |" for f in group]
            lines.append("")
    if found:
        lines += ["Reproduce one with `fuzzkv show ID --db ...` (prints a standalone script).", ""]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    # A Markdown table cell: no pipes or newlines from error messages, no raw HTML.
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")
