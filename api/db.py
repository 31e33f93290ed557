"""Engine, sessions and migrations: SQLite (WAL) embedded, PostgreSQL for scale, one schema via Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlmodel import Session

from envyard.api.files import private_dir, private_file
from envyard.builder.errors import ServiceError

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys, and its directory created."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ServiceError(
            f"database URL '{url}' cannot be parsed",
            hint="use sqlite:///path/envyard.db or postgresql://user@host:5432/dbname",
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            database = Path(parsed.database)
            if not database.parent.exists():
                private_dir(database.parent)
            for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
                if path == database or path.exists():  # SQLite gives the WAL and shm files the database's mode
                    private_file(path)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "savepoint", _sqlite_begin_before_savepoint)
        return engine
    return create_engine(parsed, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin_before_savepoint(connection: Any, _name: str) -> None:
    """Open the database transaction before a SAVEPOINT (``session.begin_nested()``) when none is open yet.

    Python's sqlite3 module begins a transaction only before INSERT, UPDATE or DELETE; a SAVEPOINT issued first
    starts one of its own, and its RELEASE then commits: what a request wrote in a savepoint would stay even when
    the request failed afterwards (e.g. the namespace of a refused environment). IMMEDIATE: savepoints are taken
    to write, so the write lock is taken at once (waiting up to the busy timeout) rather than on a later upgrade.
    """
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is not None and not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN IMMEDIATE")


#: ``pg_advisory_xact_lock`` key of schema migrations (any fixed 64-bit number; "envyard" in ASCII)
MIGRATION_LOCK = 0x656E7679617264


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic (the only way the schema changes).

    Safe with several servers starting at once on one database (replicas of a Deployment): on PostgreSQL the
    migration runs in one transaction holding an advisory lock, so the others wait for it and then find the schema
    current (SQLite is the one-server, embedded setup)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0]
        raise ServiceError(
            f"database migration failed: {reason}",
            hint=f"check the database URL ({engine.url.render_as_string(hide_password=True)}) and that it is "
            "reachable and writable",
        ) from None


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        try:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except SQLAlchemyError:  # no alembic_version table yet (OperationalError or ProgrammingError)
            return None


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
