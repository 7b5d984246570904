"""The Markdown summary reporter (``run --summary PATH``): what a CI job summary shows.

It appends, so several runs (one per model in a matrix job) can share one file such as
``$GITHUB_STEP_SUMMARY``. New and re-opened failures come first: they are what fails a
nightly job under ``--fail-on new``; known ones are listed so nothing is hidden.
"""

from __future__ import annotations

from pathlib import Path

from fuzzkv import events, rootcause
from fuzzkv.reports import scripts

HEADINGS = {"new": "New failures", "reopened": "Re-opened failures (were marked fixed)",
            "known": "Known failures (stored before, still open)",
            "flaky": "Flaky (failed, then passed when re-run as is: stored, not counted as failures)"}


class SummaryReporter:
    """Collects a run's failures; appends one Markdown section when the run finishes."""

    def __init__(self, path: str | Path, repro_dir: str | Path | None = None):
        self.path = Path(path)
        self.scripts = scripts.RunScripts(repro_dir)
        self.model = "model"
        self.name = "model"  # the model as the run names it (root causes are keyed on it)
        self.found: list[tuple[events.FailureFound, str]] = []  # each failure and how to reproduce it

    def __call__(self, event) -> None:
        if isinstance(event, events.RunStarted):
            self.name = event.settings["model"]
            self.model = f"{self.name} ({event.size(word='')}, {event.backend})"
            self.scripts.started(event.settings)
        elif isinstance(event, events.FailureFound):
            self.found.append((event, self._script(event)))
        elif isinstance(event, events.RunFinished):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(markdown(self.model, event, self.found, self.name))

    def _script(self, found: events.FailureFound) -> str:
        try:
            path = self.scripts.save(found)
        except OSError:
            path = None
        if path is not None:
            return f"`python {path}`"
        return f"`fuzzkv show {found.stored_id} --script`" if found.stored_id else "-"


def markdown(model: str, run: events.RunFinished, found: list[tuple[events.FailureFound, str]], name: str = "") -> str:
    """The run's section: its verdict, then one table row per root cause (:mod:`fuzzkv.rootcause`: failures of
    several oracles that are one bug), under the heading of its newest news."""
    failures = [f for f, _ in found]
    news, flaky = sum(f.is_news for f in failures), sum(f.is_flaky for f in failures)
    known = len(failures) - news - flaky
    verdict = f"{news} new or re-opened, {known} known" + (f", {flaky} flaky" if flaky else "") if failures else (
        "nothing tested" if run.untested else "incomplete" if run.incomplete else "clean")
    groups = rootcause.group(found, lambda item: rootcause.of_event(item[0], name))
    causes = f" ({len(groups)} root cause{'s' if len(groups) != 1 else ''})" if groups else ""
    lines = [f"### fuzzkv: {_cell(model)}", "",
             f"{run.examples} examples in {run.elapsed:.0f} s: **{verdict}**{causes}.", ""]
    if run.error:
        lines += [f"**Run stopped by an error:** {_cell(run.error)}", ""]
    for lane, why in run.blind.items():
        lines += [f"**BLIND ({_cell(lane)}), not clean:** {_cell(why)}", ""]
    for key, why in run.incomplete.items():
        lines += [f"**INCOMPLETE ({_cell(key)}), not clean:** {_cell(why)}", ""]
    for novelty, heading in HEADINGS.items():
        rows = [_row(members) for members in groups if _novelty(members) == novelty]
        if rows:
            lines += [f"**{heading}**", "", "| ids | oracles | backend | what | minimal case | where it breaks | reproduce |",
                      "|---|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines) + "\n"


def _novelty(members: list[tuple[events.FailureFound, str]]) -> str:
    """A root cause's heading: flaky, else the newest news of its failures (new, re-opened), else known."""
    failures = [f for f, _ in members]
    if failures[0].is_flaky:
        return "flaky"
    return next((f.novelty for f in failures if f.is_news), "known")


def _row(members: list[tuple[events.FailureFound, str]]) -> str:
    first, script = members[0]
    ids = ", ".join(str(f.stored_id) for f, _ in members if f.stored_id) or "-"
    oracles = ", ".join(rootcause.oracles_of(members, lambda item: item[0].verdict.oracle))
    what = "FLAKY: " + _cell(first.recheck) if first.is_flaky else _cell(first.verdict.summary())
    broken = _cell(rootcause.where_it_breaks(first.diagnosis)) or "-"
    return (f"| {ids} | {oracles} | {first.lane} | {what} | `{_cell(first.verdict.case.describe())}` | {broken} | "
            f"{script} |")


def _cell(text: str) -> str:
    # A Markdown table cell: no pipes or newlines from error messages, no raw HTML.
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")
