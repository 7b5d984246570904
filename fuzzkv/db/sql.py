"""SqlStore: runs and failures in SQLite (or any SQLAlchemy URL), via SQLAlchemy 2.x."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, event, inspect,
                        select)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from fuzzkv.case import Case
from fuzzkv.db import FailureRecord, Store, now
from fuzzkv.errors import StoreError

SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    pass


class SchemaRow(Base):
    __tablename__ = "fuzzkv_schema"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    settings: Mapped[dict] = mapped_column(JSON)
    versions: Mapped[dict] = mapped_column(JSON)
    examples: Mapped[int] = mapped_column(Integer, default=0)
    outcome: Mapped[str] = mapped_column(String(32), default="running")


class FailureRow(Base):
    __tablename__ = "failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    model: Mapped[str] = mapped_column(String(512), index=True)
    backend: Mapped[str] = mapped_column(String(32))
    oracle: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    case_json: Mapped[str] = mapped_column(Text)
    max_abs_diff: Mapped[float | None] = mapped_column(Float, nullable=True)
    tolerance: Mapped[float] = mapped_column(Float)
    metrics: Mapped[dict] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reproduction: Mapped[str] = mapped_column(Text)
    versions: Mapped[dict] = mapped_column(JSON)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    times_seen: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SqlStore(Store):
    """The default store: one SQLite file (``sqlite:///fuzzkv.db``) or another SQLAlchemy URL."""

    def __init__(self, url: str):
        self.engine = _engine(url)
        self._prepare()

    def _prepare(self) -> None:
        try:
            tables = set(inspect(self.engine).get_table_names())
            if tables and "fuzzkv_schema" not in tables:
                raise StoreError(f"{self._where()} is a database, but not a fuzzkv database; it was left untouched.",
                                 tip="point --db at a new file")
            if not tables:
                Base.metadata.create_all(self.engine)
                with Session(self.engine) as session, session.begin():
                    session.add(SchemaRow(version=SCHEMA_VERSION))
            self._check_version()
        except DatabaseError as exc:
            raise StoreError(f"{self._where()} cannot be opened as a database ({_reason(exc)}); it was left untouched.",
                             tip="point --db at a new file, or restore the file from a backup") from None

    def _check_version(self) -> None:
        with Session(self.engine) as session:
            found = session.scalar(select(SchemaRow.version))
        if found != SCHEMA_VERSION:
            raise StoreError(f"{self._where()} has fuzzkv schema version {found}; this fuzzkv uses version "
                             f"{SCHEMA_VERSION}. The file was left untouched.",
                             tip="use the fuzzkv version that wrote it, or a new --db file")

    def _where(self) -> str:
        return f"database {self.engine.url.render_as_string(hide_password=True)}"

    def start_run(self, settings, versions):
        with Session(self.engine) as session, session.begin():
            row = RunRow(started=now(), settings=settings, versions=versions)
            session.add(row)
            session.flush()
            return row.id

    def finish_run(self, run_id, examples, outcome):
        with Session(self.engine) as session, session.begin():
            row = session.get(RunRow, run_id)
            if row is not None:
                row.finished, row.examples, row.outcome = now(), examples, outcome

    def save_failure(self, record):
        with Session(self.engine) as session, session.begin():
            row = session.scalar(select(FailureRow).where(FailureRow.fingerprint == record.fingerprint))
            if row is None:
                row = _to_row(record)
                session.add(row)
            else:
                row.times_seen += 1
                row.last_seen, row.status = now(), "open"
            session.flush()
            return row.id

    def failures(self, model=None):
        query = select(FailureRow).order_by(FailureRow.id)
        if model is not None:
            query = query.where(FailureRow.model == model)
        with Session(self.engine) as session:
            rows = session.scalars(query).all()
            return [r for r in map(_from_row, rows) if r is not None]

    def close(self):
        self.engine.dispose()


def check_url(url: str) -> None:
    """Raise :class:`StoreError` for a URL that cannot work, without creating anything."""
    _engine(url).dispose()


def _engine(url: str):
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"bad database URL {url!r}.", tip="use e.g. sqlite:///fuzzkv.db") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if path.exists() and path.is_dir():
            raise StoreError(f"database path {path} is a directory.", tip="point --db at a file")
        if not path.parent.exists():
            raise StoreError(f"directory {path.parent} for the database does not exist.", tip="create it first")
    try:
        engine = create_engine(parsed)
    except Exception as exc:  # noqa: BLE001 - unknown dialect or missing driver
        raise StoreError(f"cannot use database URL {parsed.render_as_string(hide_password=True)}: {exc}.",
                         tip="use e.g. sqlite:///fuzzkv.db") from None
    if parsed.get_backend_name() == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection, _record) -> None:
    # Wait for a concurrent writer instead of failing at once.
    connection.execute("PRAGMA busy_timeout = 30000")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]


def _to_row(record: FailureRecord) -> FailureRow:
    return FailureRow(
        fingerprint=record.fingerprint, model=record.model, backend=record.backend, oracle=record.oracle,
        kind=record.kind, case_json=record.case.to_json(), max_abs_diff=record.max_abs_diff,
        tolerance=record.tolerance, metrics=record.metrics, error=record.error, reproduction=record.reproduction,
        versions=record.versions, run_id=record.run_id, status=record.status, times_seen=record.times_seen,
        first_seen=record.first_seen, last_seen=record.last_seen)


def _from_row(row: FailureRow) -> FailureRecord | None:
    """A stored row as a record; a row with an unreadable case is a miss, not a crash."""
    try:
        case = Case.from_json(row.case_json)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        return None
    return FailureRecord(
        fingerprint=row.fingerprint, model=row.model, backend=row.backend, oracle=row.oracle, kind=row.kind,
        case=case, max_abs_diff=row.max_abs_diff, tolerance=row.tolerance, metrics=row.metrics or {},
        error=row.error, reproduction=row.reproduction, versions=row.versions or {}, id=row.id, run_id=row.run_id,
        status=row.status, times_seen=row.times_seen, first_seen=row.first_seen, last_seen=row.last_seen)
