"""SqlStore: runs, failures, baselines and Hypothesis examples in SQLite (or any SQLAlchemy URL)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, overload

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from fuzzkv.case import Case
from fuzzkv.db.interface import REPLACED_FIELDS, BaselineRecord, FailureRecord, Status, Store, now, redact_url
from fuzzkv.errors import StoreError

SCHEMA_VERSION = 5
# How an older file is brought up to date, version by version. Only additive changes, so a
# file upgraded here loses nothing and an older fuzzkv's rows read the same.
MIGRATIONS = {
    1: ("ALTER TABLE failures ADD COLUMN diagnosis {json}",
        "ALTER TABLE runs ADD COLUMN failures INTEGER DEFAULT 0"),
    2: ("ALTER TABLE baselines ADD COLUMN rms_value FLOAT",
        "ALTER TABLE baselines ADD COLUMN rms_noise FLOAT"),
    3: (),  # the sweeps table: created by create_all below, in each dialect's own DDL
    4: ("ALTER TABLE baselines ADD COLUMN oracles {json}",),
}


class _JsonText(TypeDecorator):
    """JSON kept as text, as SQLite keeps it: PostgreSQL's json type refuses NaN and Infinity,
    which metrics hold when a path yields NaN (see verdict.compare)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value)

    def process_result_value(self, value, dialect):
        # A json column (a database created before this type) comes back decoded already.
        return json.loads(value) if isinstance(value, str) else value


# JSON on SQLite (unchanged schema), text on PostgreSQL.
Json = JSON().with_variant(_JsonText(), "postgresql")
# A --seed past 2**31 fits SQLite's INTEGER but not PostgreSQL's.
BigInt = Integer().with_variant(BigInteger(), "postgresql")
# Session-level advisory lock key that serialises schema creation and upgrades on PostgreSQL.
_PG_SCHEMA_LOCK = 0x66757A7A6B76  # "fuzzkv"


def _not_postgresql(*_, dialect, **__) -> bool:
    """A ``ddl_if`` condition: DDL for every database but PostgreSQL."""
    return dialect.name != "postgresql"


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
    seed: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    device: Mapped[str] = mapped_column(String(64), default="")
    settings: Mapped[dict] = mapped_column(Json)
    versions: Mapped[dict] = mapped_column(Json)
    examples: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int | None] = mapped_column(Integer, default=0, nullable=True)
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
    metrics: Mapped[dict] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reproduction: Mapped[str] = mapped_column(Text)
    versions: Mapped[dict] = mapped_column(Json)
    settings: Mapped[dict] = mapped_column(Json, default=dict)
    diagnosis: Mapped[dict | None] = mapped_column(Json, nullable=True)
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
    versions: Mapped[dict] = mapped_column(Json)
    value: Mapped[float] = mapped_column(Float)
    noise: Mapped[float] = mapped_column(Float)
    logit_scale: Mapped[float] = mapped_column(Float)
    safety_factor: Mapped[float] = mapped_column(Float)
    calibration_prompts: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rms_value: Mapped[float | None] = mapped_column(Float, nullable=True)  # schema 3
    rms_noise: Mapped[float | None] = mapped_column(Float, nullable=True)
    oracles: Mapped[list | None] = mapped_column(Json, nullable=True)  # schema 5


class SweepRow(Base):
    """One ``fuzzkv sweep``: its settings, library versions and architecture x oracle matrix (schema 4)."""

    __tablename__ = "sweeps"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    settings: Mapped[dict] = mapped_column(Json)
    versions: Mapped[dict] = mapped_column(Json)
    matrix: Mapped[dict] = mapped_column(Json)


class ExampleRow(Base):
    """Hypothesis's example database, kept in the same file (see fuzzkv.db.examples)."""

    __tablename__ = "hypothesis_examples"
    # PostgreSQL's btree refuses index rows over ~2.7 kB, and example values can be longer:
    # there the pair is kept unique through digests (below), elsewhere as it always was.
    __table_args__ = (UniqueConstraint("key", "value").ddl_if(callable_=_not_postgresql),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


Index("uq_hypothesis_examples_digests", func.sha256(ExampleRow.key), func.sha256(ExampleRow.value),
      unique=True).ddl_if(dialect="postgresql")


class SqlStore(Store):
    """The default store: one SQLite file (``sqlite:///fuzzkv.db``) or another SQLAlchemy URL."""

    def __init__(self, url: str, *, create: bool = True):
        self.engine = _engine(url)
        self.url = make_url(url)  # as given: the engine's may name the driver
        self.create = create
        self.path = _sqlite_path(self.engine.url)  # None unless an SQLite file
        if not create and self.path is not None and not self.path.exists():
            raise StoreError(f"{self._where()} does not exist.", tip="run 'fuzzkv run' first, or pass --db")
        self._prepare()

    def _prepare(self) -> None:
        server = self.engine.url.get_backend_name() != "sqlite"
        try:
            with self._schema_lock():
                tables = set(inspect(self.engine).get_table_names())
                if tables and "fuzzkv_schema" not in tables:
                    raise StoreError(f"{self._where()} is a database, but not a fuzzkv database; it was left "
                                     "untouched.", tip="point --db at a database of its own (e.g. createdb fuzzkv)"
                                     if server else "point --db at a new file")
                if not tables and server and not self.create:
                    raise StoreError(f"{self._where()} holds no fuzzkv data yet; it was left untouched.",
                                     tip="run 'fuzzkv run' with this --db first")
                if not tables:
                    Base.metadata.create_all(self.engine)
                    with Session(self.engine) as session, session.begin():
                        session.add(SchemaRow(version=SCHEMA_VERSION))
                self._upgrade()
                self._check_version()
            if self.engine.url.get_backend_name() == "sqlite":
                # WAL lets readers and one writer work at once; it is a property of the file,
                # so it is switched on only now that the file is known to be a fuzzkv store.
                with self.engine.connect() as connection:
                    connection.exec_driver_sql("PRAGMA journal_mode = WAL")
        except DatabaseError as exc:
            raise StoreError(f"{self._where()} cannot be opened as a database ({self._redact(_reason(exc))}); "
                             "it was left untouched.",
                             tip="point --db at a new file, or restore the file from a backup") from None

    @contextmanager
    def _schema_lock(self):
        """Connect (a server that cannot be reached is one clear error); on PostgreSQL, also let one
        process at a time create or upgrade the schema, since several may start at once."""
        if self.engine.url.get_backend_name() == "sqlite":
            yield
            return
        try:
            connection = self.engine.connect()
        except DBAPIError as exc:
            raise StoreError(f"cannot connect to {self._where()} ({self._redact(_reason(exc))}).",
                             tip="check that the server is running, and the host, port, user, password and database "
                                 "name in --db (create the database first, e.g. with createdb)") from None
        with connection:
            postgres = self.engine.url.get_backend_name() == "postgresql"
            if postgres:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_SCHEMA_LOCK})
                connection.commit()
            try:
                yield
            finally:
                if postgres:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_SCHEMA_LOCK})
                    connection.commit()

    def _redact(self, message: str) -> str:
        password = self.url.password
        return message.replace(str(password), "***") if password else message

    def _upgrade(self) -> None:
        """Apply the additive migrations from the file's schema version to this one, in one transaction."""
        with Session(self.engine) as session:
            found = session.scalar(select(SchemaRow.version))
        if found not in MIGRATIONS:
            return
        with self.engine.begin() as connection:
            json_type = Json.compile(dialect=connection.dialect)  # JSON on SQLite, TEXT on PostgreSQL
            for version in range(found, SCHEMA_VERSION):
                for statement in MIGRATIONS[version]:
                    connection.exec_driver_sql(statement.format(json=json_type))
            Base.metadata.create_all(connection)  # tables added since (it creates only the missing ones)
            connection.exec_driver_sql(f"UPDATE fuzzkv_schema SET version = {SCHEMA_VERSION}")

    def _check_version(self) -> None:
        with Session(self.engine) as session:
            found = session.scalar(select(SchemaRow.version))
        if found != SCHEMA_VERSION:
            age = "an older" if (found or 0) < SCHEMA_VERSION else "a newer"
            raise StoreError(f"{self._where()} was written by {age} fuzzkv (schema version {found}; this fuzzkv "
                             f"reads version {SCHEMA_VERSION}). The file was left untouched.",
                             tip="use the fuzzkv version that wrote it, or a new --db file")

    @contextmanager
    def _writing(self):
        """Every write: one transaction, so a write that fails leaves no partial row, and one clear
        error (disk full, read-only, locked past the busy timeout, file deleted) instead of a traceback."""
        if self.path is not None and not self.path.exists():
            # SQLite would go on writing to the unlinked file and lose everything at exit.
            raise StoreError(f"{self._where()} was deleted while fuzzkv was using it; nothing more was written.",
                             tip="restore it from a backup, or start again with a new --db")
        try:
            yield
        except OperationalError as exc:
            raise StoreError(f"{self._where()} could not be written ({self._redact(_reason(exc))}); that write "
                             "was rolled back, so no partial row was stored.",
                             tip="free disk space, check the file and its directory are writable, or point --db "
                                 "elsewhere") from None

    def _where(self) -> str:
        return f"database {self.url.render_as_string(hide_password=True)}"

    # -- runs ------------------------------------------------------------------------
    def start_run(self, settings, versions):
        with self._writing(), Session(self.engine) as session, session.begin():
            row = RunRow(started=now(), settings=settings, versions=versions, model=str(settings.get("model", "")),
                         seed=settings.get("seed"), device=str(settings.get("device", "")))
            session.add(row)
            session.flush()
            return row.id

    def finish_run(self, run_id, examples, outcome, failures=0):
        with self._writing(), Session(self.engine) as session, session.begin():
            row = session.get(RunRow, run_id)
            if row is not None:
                row.finished, row.examples, row.outcome, row.failures = now(), examples, outcome, failures

    def runs(self):
        with Session(self.engine) as session:
            rows = session.scalars(select(RunRow).order_by(RunRow.id)).all()
            return [{"id": r.id, "settings": r.settings, "versions": r.versions, "started": _utc(r.started),
                     "finished": _utc(r.finished), "examples": r.examples, "failures": r.failures or 0,
                     "outcome": r.outcome} for r in rows]

    # -- sweeps ----------------------------------------------------------------------
    def save_sweep(self, settings, versions, matrix):
        with self._writing(), Session(self.engine) as session, session.begin():
            row = SweepRow(created=now(), settings=settings, versions=versions, matrix=matrix)
            session.add(row)
            session.flush()
            return row.id

    def sweeps(self):
        with Session(self.engine) as session:
            rows = session.scalars(select(SweepRow).order_by(SweepRow.id)).all()
            return [{"id": r.id, "created": _utc(r.created), "settings": r.settings, "versions": r.versions,
                     "matrix": r.matrix} for r in rows if isinstance(r.matrix, dict)]

    # -- failures --------------------------------------------------------------------
    def save_failure(self, record):
        with self._writing():
            return _retrying(lambda: self._save(record))

    def _save(self, record) -> int:
        with Session(self.engine) as session, session.begin():
            return self._upsert(session, record)

    def _upsert(self, session, record) -> int:
        row = session.scalar(select(FailureRow).where(FailureRow.fingerprint == record.fingerprint))
        if row is None:
            row = _to_row(record)
            session.add(row)
        else:
            row.times_seen = FailureRow.times_seen + 1  # in SQL: concurrent writers never lose a count
            row.last_seen, row.status = now(), record.status  # open again, or flaky if it did not re-run
        session.flush()
        return row.id

    def replace_failure(self, failure_id, record):
        with self._writing():
            return _retrying(lambda: self._replace(failure_id, record))

    def _replace(self, failure_id, record) -> int:
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
        with self._writing(), Session(self.engine) as session, session.begin():
            row = session.get(FailureRow, failure_id)
            if row is None:
                return
            row.status = status
            if seen:
                row.times_seen = FailureRow.times_seen + 1  # in SQL: concurrent writers never lose a count
                row.last_seen = now()

    # -- baselines -------------------------------------------------------------------
    def save_baseline(self, baseline):
        with self._writing(), Session(self.engine) as session, session.begin():
            fields = {k: getattr(baseline, k) for k in ("model", "scale", "backend", "dtype", "device", "attn",
                                                          "versions", "value", "noise", "logit_scale",
                                                          "safety_factor", "calibration_prompts", "created",
                                                          "rms_value", "rms_noise")}
            oracles = None if baseline.oracles is None else list(baseline.oracles)
            row = BaselineRow(**fields, oracles=oracles)
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
            with self._writing(), Session(self.engine) as session, session.begin():
                session.add(ExampleRow(key=key, value=value))
        except IntegrityError:
            pass  # already saved: saving is idempotent

    def example_delete(self, key, value):
        with self._writing(), Session(self.engine) as session, session.begin():
            session.execute(delete(ExampleRow).where(ExampleRow.key == key, ExampleRow.value == value))

    def close(self):
        self.engine.dispose()


def _retrying(write, attempts: int = 5):
    """Run a failure write; retry when another writer inserted the same fingerprint first.

    Two workers that find the same failure at once both see no row and both insert: the
    unique fingerprint rejects the second, whose retry then finds the row and updates it.
    """
    for attempt in range(attempts):
        try:
            return write()
        except IntegrityError:
            if attempt == attempts - 1:
                raise


def check_url(url: str) -> None:
    """Raise :class:`StoreError` for a URL that cannot work, without creating anything."""
    _engine(url).dispose()


def _engine(url: str):
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreError(f"bad database URL {redact_url(url)!r}.", tip="use e.g. sqlite:///fuzzkv.db, or "
                         "postgresql://user:password@host:5432/fuzzkv with special characters in the password "
                         "percent-encoded (@ as %40)") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if path.exists() and path.is_dir():
            raise StoreError(f"database path {path} is a directory.", tip="point --db at a file")
        if not path.parent.exists():
            raise StoreError(f"directory {path.parent} for the database does not exist.", tip="create it first")
    shown = parsed.render_as_string(hide_password=True)
    options: dict[str, Any] = {"hide_parameters": True}  # an error message never shows stored values (a run's settings)
    if parsed.drivername in ("postgresql", "postgres"):
        # psycopg 3 for a plain postgresql:// URL (SQLAlchemy 2.0 would pick psycopg2).
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        options["pool_pre_ping"] = True  # a long run outlives idle connections the server or network dropped
        if "connect_timeout" not in parsed.query:
            options["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **options)
    except ImportError as exc:
        raise StoreError(f"cannot use database URL {shown}: its driver is not installed ({exc}).",
                         tip="for PostgreSQL: pip install 'psycopg[binary]'" if parsed.get_backend_name() ==
                         "postgresql" else "install the driver, or use e.g. sqlite:///fuzzkv.db") from None
    except Exception as exc:  # noqa: BLE001 - unknown dialect
        raise StoreError(f"cannot use database URL {shown}: {exc}.",
                         tip="use e.g. sqlite:///fuzzkv.db or postgresql://user:password@host:5432/fuzzkv") from None
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


@overload
def _utc(value: datetime) -> datetime: ...
@overload
def _utc(value: None) -> None: ...
def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; every stored time is UTC. PostgreSQL returns them in
    # the session's time zone: shown in UTC all the same.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC) if value is not None else None


def _to_row(record: FailureRecord) -> FailureRow:
    return FailureRow(
        fingerprint=record.fingerprint, model=record.model, backend=record.backend, oracle=record.oracle,
        kind=record.kind, case_json=record.case.to_json(), max_abs_diff=record.max_abs_diff,
        tolerance=record.tolerance, tolerance_source=record.tolerance_source, metrics=record.metrics,
        error=record.error, reproduction=record.reproduction, versions=record.versions, settings=record.settings,
        diagnosis=record.diagnosis or None, run_id=record.run_id, status=record.status,
        times_seen=record.times_seen, first_seen=record.first_seen, last_seen=record.last_seen)


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
        diagnosis=row.diagnosis if isinstance(row.diagnosis, dict) else {},
        tolerance_source=row.tolerance_source or "", id=row.id, run_id=row.run_id, status=cast(Status, row.status),
        times_seen=row.times_seen, first_seen=_utc(row.first_seen), last_seen=_utc(row.last_seen))


def _covered(oracles: object) -> tuple[str, ...] | None:
    """A baseline's measured oracles: None (stored before schema 5: every one) as None; anything but a list of names
    as none at all, so bad stored data is a miss, never a tolerance for oracles it did not measure."""
    if oracles is None:
        return None
    if isinstance(oracles, list) and all(isinstance(name, str) for name in oracles):
        return tuple(oracles)
    return ()


def _baseline(row: BaselineRow) -> BaselineRecord:
    return BaselineRecord(
        model=row.model, scale=row.scale, backend=row.backend, dtype=row.dtype, device=row.device, attn=row.attn,
        versions=row.versions or {}, value=row.value, noise=row.noise, logit_scale=row.logit_scale,
        safety_factor=row.safety_factor, calibration_prompts=row.calibration_prompts, id=row.id,
        created=_utc(row.created), rms_value=row.rms_value, rms_noise=row.rms_noise,
        oracles=_covered(row.oracles))
