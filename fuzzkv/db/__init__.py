"""The store: fuzzkv's memory of runs, shrunk failures and tolerance baselines.

Modelled on Hypothesis's ``database.py``: a small abstract class, small implementations
(:class:`MemoryStore` for tests, :class:`~fuzzkv.db.sql.SqlStore` for SQLite and other
SQLAlchemy URLs), and bad stored data treated as a miss, never a crash. Only this
package imports sqlalchemy. The readable :class:`~fuzzkv.case.Case` rows are the source
of truth; Hypothesis's own example bytes (kept beside them) are only a head start.
"""

from __future__ import annotations

from fuzzkv.db.interface import (
    REPLACED_FIELDS,
    STATUSES,
    BaselineRecord,
    FailureRecord,
    Status,
    Store,
    now,
    redact_url,
)
from fuzzkv.db.memory import MemoryStore

__all__ = ["REPLACED_FIELDS", "STATUSES", "BaselineRecord", "FailureRecord", "MemoryStore", "Status", "Store",
           "check_url", "now", "open_store", "redact_url"]


def check_url(url: str) -> None:
    """Validate a store URL before anything is written (raises StoreError)."""
    if url != "memory:":
        from fuzzkv.db.sql import check_url as check_sql_url

        check_sql_url(url)


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store at ``url``: ``memory:`` or an SQLAlchemy URL (SQLite by default).

    With ``create=False`` (read-only commands) a missing SQLite file is an error, not a new file.
    """
    if url == "memory:":
        return MemoryStore()
    from fuzzkv.db.sql import SqlStore

    return SqlStore(url, create=create)
