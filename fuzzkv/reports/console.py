"""The console reporter: progress on a terminal, plain lines elsewhere, and every failure
with its minimal case and how to reproduce it."""

from __future__ import annotations

import sys
import time

from fuzzkv import events


def _lane(lane: str) -> str:
    """How a lane is named after an oracle: nothing for the default HF backend."""
    return "" if lane == "hf" else f" [{lane}]"


class ConsoleReporter:
    """Prints run events to a stream (stderr for progress, the stream itself for results)."""

    def __init__(self, stream=None, *, tty: bool | None = None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._last_progress = 0.0
        self._progress_shown = False

    def __call__(self, event) -> None:
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler:
            handler(event)

    def _line(self, text: str = "") -> None:
        if self._progress_shown:
            self.stream.write("\r\033[K")
            self._progress_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _on_RunStarted(self, e: events.RunStarted) -> None:
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

    def _on_ExampleChecked(self, e: events.ExampleChecked) -> None:
        if not self.tty or time.monotonic() - self._last_progress < 0.2:
            return
        self._last_progress = time.monotonic()
        self.stream.write(f"\r\033[K  {e.oracle}: {e.examples} examples, {e.failures} failure(s), {e.elapsed:.1f}s")
        self.stream.flush()
        self._progress_shown = True

    def _on_OracleFinished(self, e: events.OracleFinished) -> None:
        if e.incomplete and not e.failures:  # never "ok": it tested less than it was asked to
            self._line(f"  {e.oracle}{_lane(e.lane)}: INCOMPLETE, {e.incomplete} ({e.elapsed:.1f}s)")
            return
        timed = ", stopped by --max-time" if e.stopped_by_time else ""
        status = f"{e.failures} failure(s)" if e.failures else "ok"
        self._line(f"  {e.oracle}{_lane(e.lane)}: {status} after {e.examples} examples in {e.elapsed:.1f}s{timed}")

    def _on_FailureFound(self, e: events.FailureFound) -> None:
        v = e.verdict
        self._line(f"  FAILURE [{v.kind}]{_lane(e.lane)} {v.summary()}")
        self._line(f"    minimal case: {v.case.describe()}")
        self._line(f"    case JSON: {v.case.to_json()}")
        m = v.metrics
        if m is not None and m.greedy_divergence_step is not None:
            self._line(f"    greedy tokens diverge at position {m.greedy_divergence_step} (top-2 margin {m.top2_margin:.3g})")
        if e.is_flaky:
            self._line(f"    FLAKY: it did not fail again when re-run as is: {e.recheck}. Stored as flaky, "
                       "not counted as a failure")
        elif not e.is_news:
            self._line("    known: stored before this run and still open (not new)")
        elif e.novelty == "reopened":
            self._line("    REOPENED: stored before and marked fixed, failing again")
        stored = f" (stored as failure {e.stored_id}; 'fuzzkv show {e.stored_id}' prints the script)" if e.stored_id else ""
        self._line(f"    reproduce: save the script below as repro.py and run 'python repro.py'{stored}")
        for line in e.reproduction.splitlines():
            self._line(f"      {line}")

    def _on_RunFinished(self, e: events.RunFinished) -> None:
        kinds: dict[str, int] = {}
        for f in e.failures:
            kinds[f.verdict.kind] = kinds.get(f.verdict.kind, 0) + 1
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        verdict = f"{len(e.failures)} failure(s) ({detail})" if e.failures else "no failures"
        self._line(f"{verdict} in {e.examples} examples, {e.elapsed:.1f}s (run {e.run_id})")
        if e.error:
            self._line(f"Run stopped by an error: {e.error}")
        if e.blind and not e.failures:
            self._line("BLIND, not clean: " + "; ".join(f"{lane}: {why}" for lane, why in e.blind.items()))
        if e.incomplete and not e.failures:
            self._line("INCOMPLETE, not clean: " + "; ".join(f"{key}: {why}" for key, why in e.incomplete.items())
                       + ". Raise --max-time (or lower --max-examples) to test every oracle as asked.")
        if e.untested:
            self._line("NOTHING TESTED, not clean: no example ran (every requested oracle was skipped, unsupported or "
                       "out of time: the lines above say why).")
        if e.interrupted:
            ids = ", ".join(map(str, e.shrinking))
            pending = f"; stored while shrinking (smallest case so far): {ids}" if e.shrinking else ""
            self._line(f"Interrupted: the run stopped early; every failure found is stored{pending}. "
                       "'fuzzkv failures' lists them.")


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
