"""Errors that reach the user, and the exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_BLIND = 4  # no failure found, but a lane could not see: its canaries went unseen, or its tolerance is too large
EXIT_UNTESTED = 5  # nothing was tested: every requested oracle skipped or unsupported, 0 examples run
EXIT_INCOMPLETE = 6  # no failure found, but a requested oracle ran fewer examples than asked, or none, or was skipped
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it (128 + SIGINT)


class FuzzkvError(Exception):
    """Base class: a problem fuzzkv explains in one line, with an optional tip."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, tip: str | None = None):
        super().__init__(message)
        self.message = message
        self.tip = tip

    def __reduce__(self):
        # Keep the tip when the error crosses a process boundary (``--workers``).
        return type(self), (self.message, self.tip)

    def one_line(self) -> str:
        """The message and its tip on one line, as printed by the CLI."""
        return f"{self.message} Tip: {self.tip}" if self.tip else self.message


class UsageError(FuzzkvError):
    """Bad input: an unknown model, a malformed option, an unreadable path (exit 2)."""

    exit_code = EXIT_USAGE


class CannotBuildModel(UsageError):
    """An architecture whose config cannot be made into a working model here (exit 2; a sweep's "could not build")."""


class NotFuzzable(UsageError):
    """A model fuzzkv does not fuzz, by what it is (an encoder, a seq2seq decoder, a multimodal model): exit 2;
    a sweep's "not applicable"."""


class StoreError(UsageError):
    """The database URL or file cannot be used as a fuzzkv store (exit 2)."""
