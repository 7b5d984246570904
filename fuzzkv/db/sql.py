"""SqlStore: runs, failures, baselines and Hypothesis examples in SQLite (or any SQLAlchemy URL)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (JSON, DateTime, Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint,
                        create_engine, delete, event, inspect, select)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from fuzzkv.case import Case
from fuzzkv.db import REPLACED_FIELDS, BaselineRecord, FailureRecord, Store, now
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
    model: Mapped[str] = mapped_column(String(512), default="")
    seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    device: Mapped[str] = mapped_column(String(64), default="")
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
    tolerance_source: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reproduction: Mapped[str] = mapped_column(Text)
    versions: Mapped[dict] = mapped_column(JSON)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    times_seen: Mapped[int] = mapped_column(Integer, default=1)
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BaselineRow(Base):
    __tablename__ = "baselines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model: Mapped[str] = mapped_column(String(512), index=True)
    scale: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str] = mapped_column(String(32))
    dtype: Mapped[str] = mapped_column(String(16))
    device: Mapped[str] = mapped_column(String(64))
    attn: Mapped[str] = mapped_column(String(16))
    versions: Mapped[dict] = mapped_column(JSON)
    value: Mapped[float] = mapped_column(Float)
    noise: Mapped[float] = mapped_column(Float)
    logit_scale: Mapped[float] = mapped_column(Float)
    safety_factor: Mapped[float] = mapped_column(Float)
    calibration_prompts: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ExampleRow(Base):
    """Hypothesis's example database, kept in the same file (see fuzzkv.db.examples)."""

    __tablename__ = "hypothesis_examples"
    __table_args__ = (UniqueConstraint("key", "value"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class SqlStore(Store):
    """The default store: one SQLite file (``sqlite:///fuzzkv.db``) or another SQLAlchemy URL."""

    def __init__(self, url: str, *, create: bool = True):
        self.engine = _engine(url)
        path = _sqlite_path(self.engine.url)
        if not create and path is not None and not path.exists():
            raise StoreError(f"{self._where()} does not exist.", tip="run 'fuzzkv run' first, or pass --db")
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
            if self.engine.url.get_backend_name() == "sqlite":
                # WAL lets readers and one writer work at once; it is a property of the file,
                # so it is switched on only now that the file is known to be a fuzzkv store.
                with self.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA journal_mode = WAL")
        except DatabaseError as exc:
            raise StoreError(f"{self._where()} cannot be opened as a database ({_reason(exc)}); it was left untouched.",
                             tip="point --db at a new file, or restore the file from a backup") from None

    def _check_version(self) -> None:
        with Session(self.engine) as session:
            found = session.scalar(select(SchemaRow.version))
        if found != SCHEMA_VERSION:
            age = "an older" if (found or 0) < SCHEMA_VERSION else "a newer"
            raise StoreError(f"{self._where()} was written by {age} fuzzkv (schema version {found}; this fuzzkv "
                             f"reads version {SCHEMA_VERSION}). The file was left untouched.",
                             tip="use the fuzzkv version that wrote it, or a new --db file")

    def _where(self) -> str:
        return f"database {self.engine.url.render_as_string(hide_password=True)}"

    # -- runs ------------------------------------------------------------------------
    def start_run(self, settings, versions):
        with Session(self.engine) as session, session.begin():
            row = RunRow(started=now(), settings=settings, versions=versions, model=str(settings.get("model", "")),
                         seed=settings.get("seed"), device=str(settings.get("device", "")))
            session.add(row)
            session.flush()
            return row.id

    def finish_run(self, run_id, examples, outcome):
        with Session(self.engine) as session, session.begin():
            row = session.get(RunRow, run_id)
            if row is not None:
                row.finished, row.examples, row.outcome = now(), examples, outcome

    def runs(self):
        with Session(self.engine) as session:
            rows = session.scalars(select(RunRow).order_by(RunRow.id)).all()
            return [{"id": r.id, "settings": r.settings, "versions": r.versions, "started": _utc(r.started),
                     "finished": _utc(r.finished), "examples": r.examples, "outcome": r.outcome} for r in rows]

    # -- failures --------------------------------------------------------------------
    def save_failure(self, record):
        with Session(self.engine) as session, session.begin():
            return self._upsert(session, record)

    def _upsert(self, session, record) -> int:
        row = session.scalar(select(FailureRow).where(FailureRow.fingerprint == record.fingerprint))
        if row is None:
            row = _to_row(record)
            session.add(row)
        else:
            row.times_seen += 1
            row.last_seen, row.status = now(), "open"
        session.flush()
        return row.id

    def replace_failure(self, failure_id, record):
        with Session(self.engine) as session, session.begin():
            current = session.get(FailureRow, failure_id)
            known = session.scalar(select(FailureRow).where(FailureRow.fingerprint == record.fingerprint))
            if current is None or (known is not None and known.id != failure_id):
                if current is not None:
                    session.delete(current)
                    session.flush()
                return self._upsert(session, record)
            fresh = _to_row(record)
            for name in REPLACED_FIELDS:
                column = "case_json" if name == "case" else name
                setattr(current, column, getattr(fresh, column))
            current.last_seen = now()
            return current.id

    def failures(self, model=None, status=None):
        query = select(FailureRow).order_by(FailureRow.id)
        if model is not None:
            query = query.where(FailureRow.model == model)
        if status is not None:
            query = query.where(FailureRow.status == status)
        with Session(self.engine) as session:
            return [r for r in map(_from_row, session.scalars(query).all()) if r is not None]

    def failure(self, failure_id):
        with Session(self.engine) as session:
            row = session.get(FailureRow, failure_id)
            return _from_row(row) if row is not None else None

    def mark(self, failure_id, status, *, seen=False):
        with Session(self.engine) as session, session.begin():
            row = session.get(FailureRow, failure_id)
            if row is None:
                return
            row.status = status
            if seen:
                row.times_seen += 1
                row.last_seen = now()

    # -- baselines -------------------------------------------------------------------
    def save_baseline(self, baseline):
        with Session(self.engine) as session, session.begin():
            fields = {k: getattr(baseline, k) for k in ("model", "scale", "backend", "dtype", "device", "attn",
                                                          "versions", "value", "noise", "logit_scale",
                                                          "safety_factor", "calibration_prompts", "created")}
            row = BaselineRow(**fields)
            session.add(row)
            session.flush()
            return row.id

    def baselines(self, key):
        model, scale, backend, dtype, device, attn = key
        query = (select(BaselineRow).where(BaselineRow.model == model, BaselineRow.scale == scale,
                                           BaselineRow.backend == backend, BaselineRow.dtype == dtype,
                                           BaselineRow.device == device, BaselineRow.attn == attn)
                 .order_by(BaselineRow.id.desc()))
        with Session(self.engine) as session:
            return [_baseline(r) for r in session.scalars(query).all()]

    # -- Hypothesis example bytes ----------------------------------------------------
    def example_fetch(self, key):
        with Session(self.engine) as session:
            return list(session.scalars(select(ExampleRow.value).where(ExampleRow.key == key).order_by(ExampleRow.id)))

    def example_save(self, key, value):
        try:
            with Session(self.engine) as session, session.begin():
                session.add(ExampleRow(key=key, value=value))
        except IntegrityError:
            pass  # already saved: saving is idempotent

    def example_delete(self, key, value):
        with Session(self.engine) as session, session.begin():
            session.execute(delete(ExampleRow).where(ExampleRow.key == key, ExampleRow.value == value))

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


def _sqlite_path(url) -> Path | None:
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database)
    return None


def _sqlite_pragmas(connection, _record) -> None:
    # Wait for a concurrent writer instead of failing at once. synchronous=NORMAL is safe
    # in WAL mode (set once the file is known to be ours, see SqlStore._prepare).
    connection.execute("PRAGMA busy_timeout = 30000")
    connection.execute("PRAGMA synchronous = NORMAL")


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _to_row(record: FailureRecord) -> FailureRow:
    return FailureRow(
        fingerprint=record.fingerprint, model=record.model, backend=record.backend, oracle=record.oracle,
        kind=record.kind, case_json=record.case.to_json(), max_abs_diff=record.max_abs_diff,
        tolerance=record.tolerance, tolerance_source=record.tolerance_source, metrics=record.metrics,
        error=record.error, reproduction=record.reproduction, versions=record.versions, settings=record.settings,
        run_id=record.run_id, status=record.status, times_seen=record.times_seen, first_seen=record.first_seen,
        last_seen=record.last_seen)


def _from_row(row: FailureRow) -> FailureRecord | None:
    """A stored row as a record; a row with an unreadable case is a miss, not a crash."""
    try:
        case = Case.from_json(row.case_json)
    except (ValueError, TypeError, KeyError, json.JSONDecodeError):
        return None
    return FailureRecord(
        fingerprint=row.fingerprint, model=row.model, backend=row.backend, oracle=row.oracle, kind=row.kind,
        case=case, max_abs_diff=row.max_abs_diff, tolerance=row.tolerance, metrics=row.metrics or {},
        error=row.error, reproduction=row.reproduction, versions=row.versions or {}, settings=row.settings or {},
        tolerance_source=row.tolerance_source or "", id=row.id, run_id=row.run_id, status=row.status,
        times_seen=row.times_seen, first_seen=_utc(row.first_seen), last_seen=_utc(row.last_seen))


def _baseline(row: BaselineRow) -> BaselineRecord:
    return BaselineRecord(
        model=row.model, scale=row.scale, backend=row.backend, dtype=row.dtype, device=row.device, attn=row.attn,
        versions=row.versions or {}, value=row.value, noise=row.noise, logit_scale=row.logit_scale,
        safety_factor=row.safety_factor, calibration_prompts=row.calibration_prompts, id=row.id,
        created=_utc(row.created))
