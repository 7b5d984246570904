"""Hypothesis's example database, kept in fuzzkv's own store (same SQLite file).

Hypothesis replays the examples saved here first, so a failure found last night is tried
again before anything new. These bytes are a head start only: Hypothesis may stop
understanding them after an upgrade, and ``fuzzkv replay`` never depends on them.
"""

from __future__ import annotations

from hypothesis.database import ExampleDatabase

from fuzzkv.db import Store


class StoreExampleDatabase(ExampleDatabase):
    """An ``ExampleDatabase`` over a :class:`~fuzzkv.db.Store`, namespaced per model and oracle."""

    def __init__(self, store: Store, namespace: str):
        super().__init__()
        self.store = store
        self.prefix = namespace.encode() + b"\x00"

    def __repr__(self) -> str:
        return f"StoreExampleDatabase({self.prefix[:-1].decode()!r})"

    def save(self, key: bytes, value: bytes) -> None:
        self.store.example_save(self.prefix + key, value)

    def fetch(self, key: bytes):
        yield from self.store.example_fetch(self.prefix + key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.store.example_delete(self.prefix + key, value)
