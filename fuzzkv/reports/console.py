"""The console reporter: progress on a terminal, plain lines elsewhere, and the run's failures grouped by root
cause (:mod:`fuzzkv.rootcause`), each with the oracles that saw it, its minimal case, where it breaks and the path of
its saved reproduction script (:mod:`fuzzkv.reports.scripts`: scripts are written to files, never printed).

Verbosity: ``-q`` (-1) prints only one line per root cause and the final verdict; the default (0) adds the run's
progress, one line per failure and a few lines per root cause; ``-v`` (1) adds each failure's minimal case, case
JSON, where it breaks and script path."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from fuzzkv import events, rootcause
from fuzzkv.reports import scripts


def _lane(lane: str) -> str:
    """How a lane is named after an oracle: nothing for the default HF backend."""
    return "" if lane == "hf" else f" [{lane}]"


class ConsoleReporter:
    """Prints run events to a stream (stderr for progress, the stream itself for results)."""

    def __init__(self, stream=None, *, tty: bool | None = None, verbosity: int = 0, repro_dir: str | Path | None = None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.verbosity = verbosity
        self.scripts = scripts.RunScripts(repro_dir)
        self._model = ""
        self._found: list[tuple[events.FailureFound, Path | None]] = []
        self._last_progress = 0.0
        self._progress_shown = False

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler:
            handler(event)

    def _line(self, text: str = "", level: int = 0) -> None:
        """Print ``text`` at verbosity ``level`` and above."""
        if self.verbosity < level:
            return
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _on_RunStarted(self, e: events.RunStarted) -> None:
        self.scripts.started(e.settings)
        self._model = e.settings.get("model", "")
        v = e.versions
        self._line(f"fuzzkv {v['fuzzkv']}: model {e.settings['model']} ({e.size()}), backend {e.backend}, "
                   f"{e.settings['dtype']} on {e.settings['device']}, attention {e.settings['attn']}, seed {e.settings['seed']}")
        self._line(f"  {e.model_source}")
        self._line(f"  torch {v['torch']}, transformers {v['transformers']}, hypothesis {v['hypothesis']}")

    def _on_ToleranceChosen(self, e: events.ToleranceChosen) -> None:
        self._line(f"  tolerance{_lane(e.lane)} {e.value:.3g} ({e.source})")
        if e.regression:
            self._line(f"  WARNING: {e.regression}")

    def _on_CanariesChecked(self, e: events.CanariesChecked) -> None:
        total = len(e.caught) + len(e.missed)
        self._line(f"  canaries{_lane(e.lane)} caught {len(e.caught)}/{total}"
                   + (f" (not applicable: {', '.join(e.not_applicable)})" if e.not_applicable else ""))
        if e.blind:
            self._line(f"  BLIND{_lane(e.lane)}: {e.blind}")

    def _on_BackendUnsupported(self, e: events.BackendUnsupported) -> None:
        self._line(f"  unsupported by backend {e.lane}: {e.reason} (not a failure; its oracles are skipped)")

    def _on_OracleSkipped(self, e: events.OracleSkipped) -> None:
        self._line(f"oracle {e.oracle}{_lane(e.lane)}: not applicable: {e.reason}")

    def _on_OracleStarted(self, e: events.OracleStarted) -> None:
        self._line(f"oracle {e.oracle}{_lane(e.lane)}: {e.description}")

    def _on_Preparing(self, e: events.Preparing) -> None:
        step = f"{e.step}{_lane(e.lane)}"
        self._progress(f"{step}: {e.done} of {e.total} done, {e.elapsed:.0f}s" if e.total else f"{step}...", force=True)

    def _on_ExampleChecked(self, e: events.ExampleChecked) -> None:
        self._progress(f"{e.oracle}: {e.examples} examples, {e.failures} failure(s), {e.elapsed:.1f}s")

    def _progress(self, text: str, *, force: bool = False) -> None:
        """One line rewritten in place, on a terminal only (never on a pipe or a file), at most 5 times a second
        unless ``force`` (a step that changes every few seconds)."""
        if not self.tty or self.verbosity < 0 or (not force and time.monotonic() - self._last_progress < 0.2):
            return
        self._last_progress = time.monotonic()
        self.stream.write(f"\r\033[K  {text}")
        self.stream.flush()
        self._progress_shown = True

    def _on_OracleFinished(self, e: events.OracleFinished) -> None:
        if e.incomplete and not e.failures:  # never "ok": it tested less than it was asked to
            self._line(f"  {e.oracle}{_lane(e.lane)}: INCOMPLETE, {e.incomplete} ({e.elapsed:.1f}s)")
            return
        timed = ", stopped by --max-time" if e.stopped_by_time else ""
        status = f"{e.failures} failure(s)" if e.failures else "ok"
        self._line(f"  {e.oracle}{_lane(e.lane)}: {status} after {e.examples} examples in {e.elapsed:.1f}s{timed}")

    def _save(self, e: events.FailureFound) -> Path | None:
        try:
            return self.scripts.save(e)
        except OSError as exc:
            self._line(f"    could not save the reproduction script: {exc} ('fuzzkv show ID --script' prints it)")
            return None

    def _on_FailureFound(self, e: events.FailureFound) -> None:
        v = e.verdict
        path = self._save(e)
        self._found.append((e, path))
        stored = f" (failure {e.stored_id})" if e.stored_id else ""
        self._line(f"  FAILURE [{v.kind}]{_lane(e.lane)} {v.summary()}{stored}")
        if e.is_flaky:
            self._line(f"    FLAKY: it did not fail again when re-run as is: {e.recheck}. Stored as flaky, "
                       "not counted as a failure")
        elif not e.is_news:
            self._line("    known: stored before this run and still open (not new)")
        elif e.novelty == "reopened":
            self._line("    REOPENED: stored before and marked fixed, failing again")
        self._line(f"    minimal case: {v.case.describe()}", 1)
        self._line(f"    case JSON: {v.case.to_json()}", 1)
        m = v.metrics
        if m is not None and m.greedy_divergence_step is not None:
            self._line(f"    greedy tokens diverge at position {m.greedy_divergence_step} (top-2 margin {m.top2_margin:.3g})",
                       1)
        broken = rootcause.where_it_breaks(e.diagnosis)
        if broken:
            self._line(f"    where it breaks: {broken}", 1)
        if path is not None:
            self._line(f"    reproduce: python {path}", 1)

    def _root_causes(self) -> int:
        """Every failure of the run, grouped by root cause: a few lines each (one with -q); returns how many."""
        groups = rootcause.group(self._found, lambda found: rootcause.of_event(found[0], self._model))
        for number, members in enumerate(groups, 1):
            first, path = members[0]
            v = first.verdict
            oracles = rootcause.oracles_of(members, lambda found: found[0].verdict.oracle)
            tag = " FLAKY" if first.is_flaky else " (known)" if not any(f.is_news for f, _ in members) else ""
            script = f"python {path}" if path else "no script saved"
            if self.verbosity < 0:
                self._line(f"ROOT CAUSE {number} [{v.kind}]{_lane(first.lane)}{tag} {', '.join(oracles)}: "
                           f"{v.summary()}; {script}", -1)
                continue
            self._line(f"ROOT CAUSE {number} of {len(groups)} [{v.kind}]{_lane(first.lane)}{tag}: {v.summary()}")
            ids = [f.stored_id for f, _ in members if f.stored_id]
            stored = f" (stored as failure{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))})" if ids else ""
            self._line(f"  seen by {len(oracles)} oracle(s): {', '.join(oracles)}{stored}")
            self._line(f"  minimal case: {v.case.describe()}")
            broken = rootcause.where_it_breaks(first.diagnosis)
            if broken:
                self._line(f"  where it breaks: {broken}")
            others = [str(p) for _, p in members[1:] if p is not None]
            also = f"; the other oracles' scripts: {', '.join(others)}" if others else ""
            self._line(f"  reproduce: {script} (exits 1 while the bug is there{also})")
        return len(groups)

    def _on_RunFinished(self, e: events.RunFinished) -> None:
        causes = self._root_causes()
        kinds: dict[str, int] = {}
        for f in e.failures:
            kinds[f.verdict.kind] = kinds.get(f.verdict.kind, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        verdict = f"{len(e.failures)} failure(s) ({detail})" if e.failures else "no failures"
        grouped = f"; {causes} root cause{'s' if causes != 1 else ''}" if e.failures else ""
        self._line(f"{verdict} in {e.examples} examples, {e.elapsed:.1f}s (run {e.run_id}){grouped}", -1)
        if e.error:
            self._line(f"Run stopped by an error: {e.error}", -1)
        if e.blind and not e.failures:
            self._line("BLIND, not clean: " + "; ".join(f"{lane}: {why}" for lane, why in e.blind.items()), -1)
        if e.incomplete and not e.failures:
            self._line("INCOMPLETE, not clean: " + "; ".join(f"{key}: {why}" for key, why in e.incomplete.items())
                       + ". Raise --max-time (or lower --max-examples) to test every oracle as asked.", -1)
        if e.untested:
            self._line("NOTHING TESTED, not clean: no example ran (every requested oracle was skipped, unsupported or "
                       "out of time: the lines above say why).", -1)
        if e.interrupted:
            ids = ", ".join(map(str, e.shrinking))
            pending = f"; stored while shrinking (smallest case so far): {ids}" if e.shrinking else ""
            self._line(f"Interrupted: the run stopped early; every failure found is stored{pending}. "
                       "'fuzzkv failures' lists them.", -1)


class ReplayConsoleReporter(ConsoleReporter):
    """Console lines for ``fuzzkv replay``."""

    def _on_ReplayChecked(self, e) -> None:
        r, v = e.record, e.verdict
        detail = v.summary() if v.failed else "passes now"
        said = {"fails": "STILL FAILS", "reopened": "REOPENED (was fixed)", "fixed": "fixed"}[e.outcome]
        self._line(f"failure {r.id} [{r.model} / {r.oracle}]: {said} - {detail}")

    def _on_ReplaySkipped(self, e) -> None:
        self._line(f"failures {', '.join(map(str, e.failure_ids))}: skipped - {e.reason}")

    def _on_ReplayFinished(self, e) -> None:
        reopened = f", {e.reopened} re-opened" if e.reopened else ""
        self._line(f"replay: {e.failing} still failing{reopened}, {e.fixed} fixed, {e.skipped} skipped "
                   f"in {e.elapsed:.1f}s")
