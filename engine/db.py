"""The SQLAlchemy engine and transactions.

SQLite (the embedded default) runs in WAL mode with foreign keys on and a busy timeout, so
the UI and the sidecar can share one file. PostgreSQL is reached through psycopg 3.
Services open work with ``transaction()``: it commits on success and rolls back on any
error, so a failed service call leaves nothing half-written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from engine.config import PROJECT_ROOT, get_settings

SQLITE_BUSY_TIMEOUT_MS = 15_000

_lock = threading.Lock()
_engine: Engine | None = None
_sessions: sessionmaker[Session] | None = None


def normalize_url(url: str) -> str:
    """Resolve a relative SQLite path against the project root and pick psycopg 3 for PostgreSQL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.is_absolute():
            path = PROJECT_ROOT / path
        path.parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(path))
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> Engine:
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that
        # a writer takes the lock at the start of its transaction, not half way through.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_begin(conn) -> None:
    # Straight to the driver: this runs for every transaction, and it is no statement of ours to log.
    conn.connection.dbapi_connection.execute(f"BEGIN {conn.get_execution_options().get('sqlite_begin', '')}")


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine() -> Engine:
    global _engine, _sessions
    with _lock:
        if _engine is None:
            _engine = make_engine(get_settings().database_url)
            _sessions = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def use_engine(engine: Engine | None) -> None:
    """Point the process at another database (tests, the CLI's ``--database``)."""
    global _engine, _sessions
    with _lock:
        if _engine is not None and _engine is not engine:
            _engine.dispose()
        _engine = engine
        _sessions = sessionmaker(engine, expire_on_commit=False) if engine is not None else None


def is_sqlite(engine: Engine | None = None) -> bool:
    return (engine or get_engine()).dialect.name == "sqlite"


@contextmanager
def transaction() -> Iterator[Session]:
    get_engine()
    assert _sessions is not None
    session = _sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def write_transaction() -> Iterator[Connection]:
    """A Core transaction that holds the write lock from its first moment (SQLite's BEGIN IMMEDIATE).

    For a transaction that must read what it is about to change with no other writer in between:
    on SQLite no other writer can commit between its reads and its writes. PostgreSQL begins as
    usual; lock the rows there (``FOR UPDATE``).
    """
    with get_engine().connect() as conn:
        conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield conn


_TAKE_WRITE_LOCK = text("UPDATE users SET id = id WHERE 0")


def write_lock(s: Session) -> None:
    """On SQLite, take the database's write lock before reading (BEGIN IMMEDIATE in effect).

    A transaction that reads and then writes would otherwise fail at once with "database is
    locked" when another writer got there in between; taking the lock first makes it wait.
    """
    if s.get_bind().dialect.name == "sqlite":
        s.execute(_TAKE_WRITE_LOCK)


@contextmanager
def read_session() -> Iterator[Session]:
    get_engine()
    assert _sessions is not None
    session = _sessions()
    try:
        yield session
    finally:
        # close(), not rollback(): rollback would expire the objects being returned.
        session.close()
