"""The process's one in-memory DuckDB database, which the warehouse's exports and readers share."""

from __future__ import annotations

import threading

import duckdb

THREADS = 2

_shared_lock = threading.Lock()
_shared: duckdb.DuckDBPyConnection | None = None


def cursor() -> duckdb.DuckDBPyConnection:
    """A new connection to the process's one in-memory DuckDB database.

    Opening a database costs tens of milliseconds, a connection to it almost nothing; each
    connection has its own temporary views and registered tables, so two never see each
    other's. Sharing the database also shares its cache of Parquet footers, which is safe
    because a warehouse file is never rewritten under its name.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = duckdb.connect(config={
                "threads": THREADS, "python_enable_replacements": False, "enable_object_cache": True,
            })
        con = _shared.cursor()
    con.execute("SET TimeZone = 'UTC'")
    return con
