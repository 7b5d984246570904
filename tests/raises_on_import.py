"""A factory module that raises while being imported (for the bad-input tests)."""

raise RuntimeError("this module is broken at import time")


def make():  # pragma: no cover - never reached
    return None
