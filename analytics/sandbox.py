"""The SQL sandbox: a user's query over their own workspace's warehouse views, and nothing else.

Each query runs in its own short-lived process (``python -m analytics.sandbox_worker``). One
spare worker is always started ahead of need, so a query does not wait for Python and DuckDB
to import; it is used once and exits, so nothing one query did is left for the next. Inside,
the worker caps its address space (RLIMIT_AS: DuckDB's ``memory_limit`` is a target, not a
wall), builds the views on an in-memory DuckDB connection, then turns off file access (but for
the workspace's own Parquet directory, which the ``ledger`` view reads), replacement scans of
Python objects, extension install and autoload, spilling to disk, and finally locks the
configuration. Only one reading statement is accepted; a timer interrupts it at the time limit,
and the parent kills the worker if it does not answer soon after. A worker that dies (a memory
bomb the kernel stopped) takes only itself down.

The parent reads the workspace's snapshot (``warehouse.snapshot``) and hands it over, so the
worker never holds a database connection or sees Meterbook's settings and secrets.
"""

from __future__ import annotations

import atexit
import json
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from sqlalchemy import Engine

from analytics import SqlError, warehouse
from analytics.sandbox_worker import read_frame, reading_statement, write_frame
from engine.config import PROJECT_ROOT

ROW_CAP = 10_000
TIMEOUT_S = 30.0
MEMORY_MB = 512
MAX_SQL_CHARS = 100_000
MAX_CONCURRENT = 2  # a 2-core machine: more queries at once only share the same cores
KILL_GRACE_S = 3.0  # after the child's own interrupt, how long it has to report before it is killed

# The worker's environment: enough to run Python, none of Meterbook's settings or secrets.
WORKER_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")

_slots = threading.BoundedSemaphore(MAX_CONCURRENT)
_spare_lock = threading.Lock()
_spare: subprocess.Popen | None = None
_parser_lock = threading.Lock()
_parser: duckdb.DuckDBPyConnection | None = None  # only ever parses, never runs, a user's SQL


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    rows: pl.DataFrame  # at most the row cap
    row_count: int  # rows returned (after the cap)
    truncated: bool  # the query had more rows than the cap
    elapsed_ms: float  # time DuckDB spent on the query in the worker


def _start_worker() -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k in WORKER_ENV_KEEP}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["MALLOC_ARENA_MAX"] = "2"  # glibc reserves 64 MB of address space per arena otherwise
    return subprocess.Popen(
        [sys.executable, "-m", "analytics.sandbox_worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        cwd=PROJECT_ROOT, env=env, close_fds=True,
    )


def _take_worker() -> subprocess.Popen:
    """The warm spare if it is alive (else a new worker); another spare starts warming at once."""
    global _spare
    with _spare_lock:
        worker = _spare if _spare is not None and _spare.poll() is None else None
        _spare = _start_worker()
    return worker or _start_worker()


@atexit.register
def _stop_spare() -> None:
    global _spare
    with _spare_lock:
        if _spare is not None:
            _spare.kill()
            _spare.wait()
            _spare = None


def run_user_sql(
    workspace_id: int,
    sql: str,
    *,
    row_cap: int = ROW_CAP,
    timeout_s: float = TIMEOUT_S,
    memory_mb: int = MEMORY_MB,
    fresh: bool = True,
    root: Path | None = None,
    engine: Engine | None = None,
) -> QueryResult:
    """Run one reading statement over ``workspace_id``'s views (``analytics.views.attach`` lists them).

    Raises ``SqlError`` with a message for the user when the statement is refused, fails, or
    runs past ``timeout_s`` or ``memory_mb``.
    """
    if not sql or not sql.strip():
        raise SqlError("Write a query first, for example: SELECT provider, sum(cost) FROM ledger GROUP BY provider")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlError(f"The query is {len(sql):,} characters long; the limit is {MAX_SQL_CHARS:,}.")
    if row_cap < 0 or timeout_s <= 0 or memory_mb < 64:
        raise ValueError("row_cap must be ≥ 0, timeout_s > 0 and memory_mb ≥ 64")
    _refuse_early(sql)
    snap = warehouse.snapshot(workspace_id, fresh=fresh, root=root, engine=engine)
    if not _slots.acquire(timeout=timeout_s):
        raise SqlError("Other queries are still running; try again in a moment.")
    try:
        return _run_in_child(snap, sql, row_cap, timeout_s, memory_mb)
    finally:
        _slots.release()


def _refuse_early(sql: str) -> None:
    """Turn away what is not one reading statement before starting a worker (the worker checks again)."""
    global _parser
    with _parser_lock:
        if _parser is None:
            _parser = duckdb.connect()
        parser = _parser.cursor()
    try:
        statement, why = reading_statement(parser, sql)
    except duckdb.Error as e:
        raise SqlError(f"The query failed: {_first_line(str(e))}") from None
    finally:
        parser.close()
    if statement is None:
        raise SqlError(why)


def _run_in_child(snap: warehouse.Snapshot, sql: str, row_cap: int, timeout_s: float, memory_mb: int) -> QueryResult:
    worker = _take_worker()
    request = {"snap": snap, "sql": sql, "row_cap": row_cap, "timeout_s": timeout_s, "memory_mb": memory_mb}
    timed_out, reply = False, None
    try:
        try:
            write_frame(worker.stdin, pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))
            worker.stdin.close()
        except BrokenPipeError:
            pass  # the worker is gone already; there will be no reply
        # The worker interrupts the query itself at timeout_s; this wait is the backstop.
        ready, _, _ = select.select([worker.stdout], [], [], timeout_s + KILL_GRACE_S)
        if not ready:
            timed_out = True
        else:
            try:
                reply = _read_reply(worker.stdout)
            except EOFError:
                pass  # it died before or while answering
    finally:
        if reply is None and worker.poll() is None:
            worker.kill()
        worker.wait()
        worker.stdout.close()
    if reply is not None:
        return _result(reply, timeout_s, memory_mb)
    if timed_out:
        raise SqlError(_timeout_message(timeout_s))
    if worker.returncode in (-signal.SIGKILL, -signal.SIGABRT):
        # Killed by the kernel, or an allocation failed where nothing could report it.
        raise SqlError(_memory_message(memory_mb))
    raise SqlError(f"The query's worker stopped unexpectedly (exit status {worker.returncode}); try again.")


def _read_reply(stream) -> tuple[dict, bytes]:
    body = read_frame(stream)
    (size,) = struct.unpack("!I", body[:4])
    return json.loads(body[4 : 4 + size]), body[4 + size :]


def _result(reply: tuple[dict, bytes], timeout_s: float, memory_mb: int) -> QueryResult:
    header, payload = reply
    status, detail = header["status"], header.get("detail", "")
    if status == "ok":
        table = pa.ipc.open_stream(payload).read_all()
        frame = pl.from_arrow(table, rechunk=True)
        assert isinstance(frame, pl.DataFrame)
        return QueryResult(list(table.column_names), frame, frame.height, bool(header["truncated"]),
                           round(float(header["elapsed_ms"]), 2))
    if status == "timeout":
        raise SqlError(_timeout_message(timeout_s))
    if status == "memory":
        raise SqlError(_memory_message(memory_mb))
    if status == "refused":
        raise SqlError(
            "Queries here can read only this workspace's tables (ledger, ledger_daily, ledger_hourly, "
            "ledger_latency_daily, projects, clients, users); files, other databases and settings are out of reach. "
            f"({_first_line(detail)})"
        )
    if status == "invalid":
        raise SqlError(detail)
    raise SqlError(f"The query failed: {_first_line(detail)}")


def _timeout_message(timeout_s: float) -> str:
    return (f"The query was stopped after {timeout_s:g} s, the time limit. Narrow it down (a shorter period, "
            "fewer rows, ledger_daily instead of ledger) or check a recursive query for a stop condition.")


def _memory_message(memory_mb: int) -> str:
    return (f"The query needed more than its {memory_mb} MB of memory and was stopped. Aggregate more "
            "(GROUP BY), select fewer columns, or use ledger_daily instead of ledger.")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no detail"
