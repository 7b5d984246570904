"""Reporters: consumers of run events (console, JSON; HTML and JUnit build on the same events)."""
