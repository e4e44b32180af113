"""The child side of the SQL sandbox: ``python -m analytics.sandbox_worker`` runs one query and exits.

``analytics.sandbox`` starts this process before it is needed (a warm spare), so DuckDB is
already imported when a query arrives. The request comes on stdin (a pickle from the parent,
which is trusted); the worker caps its own address space, builds the workspace's views on a fresh
in-memory DuckDB connection, shuts every door (files, extensions, settings) and runs the one
statement. The answer goes back on the original stdout as a JSON header and an Arrow IPC stream,
never a pickle: the parent does not unpickle anything a user's query produced. Under the address
space cap an allocation that does not fit fails (DuckDB reports it, or the process aborts), so
a memory bomb ends this process, never the parent.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import sys
import threading
import time

import duckdb
import pyarrow as pa

from analytics.views import Snapshot, attach

MB = 1024 * 1024
THREADS = 2
# RLIMIT_AS limits address space, not resident memory. What the process has mapped before the
# query (interpreter, DuckDB, Arrow, the snapshot) is not the query's to spend, and threads and
# allocator arenas reserve address space they may never touch; so the cap is what is mapped
# now, plus the query's memory, plus this much for reservations.
RESERVED_MB = 384


def _mapped_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * resource.getpagesize()


def limit_memory(memory_mb: int) -> None:
    cap = _mapped_bytes() + (memory_mb + RESERVED_MB) * MB
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def locked_connection(snap: Snapshot, *, memory_mb: int, threads: int) -> duckdb.DuckDBPyConnection:
    """A connection that can see the workspace's views and nothing else, and cannot be reconfigured."""
    con = duckdb.connect(config={
        "threads": threads,
        "memory_limit": f"{memory_mb}MB",
        "temp_directory": "",  # no spilling to disk: a query that needs more memory fails instead
        "python_enable_replacements": False,  # else a query could read any frame in Python's scope
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "allow_community_extensions": False,
        "allow_unsigned_extensions": False,
    })
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    attach(con, snap)
    # The views read this workspace's Parquet files; no other path stays reachable.
    con.execute("SET allowed_directories = ?", [[d.rstrip("/") + "/" for d in snap.directories]])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def read_frame(stream) -> bytes:
    header = stream.read(8)
    if len(header) < 8:
        raise EOFError("the other side closed the pipe")
    (size,) = struct.unpack("!Q", header)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("the other side closed the pipe")
    return body


def write_frame(stream, body: bytes) -> None:
    stream.write(struct.pack("!Q", len(body)) + body)
    stream.flush()


def answer(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("!I", len(head)) + head + payload


def run(snap: Snapshot, sql: str, row_cap: int, timeout_s: float, memory_mb: int) -> bytes:
    try:
        limit_memory(memory_mb)
        con = locked_connection(snap, memory_mb=memory_mb, threads=THREADS)
        return _execute(con, sql, row_cap, timeout_s)
    except MemoryError:
        return answer({"status": "memory", "detail": ""})
    except duckdb.OutOfMemoryException as e:
        return answer({"status": "memory", "detail": str(e)})
    except duckdb.InterruptException:
        return answer({"status": "timeout", "detail": ""})
    except duckdb.PermissionException as e:
        return answer({"status": "refused", "detail": str(e)})
    except duckdb.Error as e:
        return answer({"status": "error", "detail": str(e)})
    except (pa.ArrowException, OSError) as e:  # a DuckDB error raised while Arrow pulls the stream
        text = str(e)
        status = "timeout" if "INTERRUPT" in text.upper() else "memory" if "Out of Memory" in text else "error"
        return answer({"status": status, "detail": text})


def reading_statement(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[str | None, str]:
    """(the one reading statement in ``sql``, "") or (None, why it cannot run). Parses, runs nothing."""
    statements = con.extract_statements(sql)
    if len(statements) != 1:
        return None, f"Run one statement at a time (found {len(statements)})."
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = statements[0].type.name.replace("_", " ")
        return None, f"Only queries that read (SELECT, WITH … SELECT, DESCRIBE) can run here, not {kind}."
    return statements[0].query, ""


def _execute(con: duckdb.DuckDBPyConnection, sql: str, row_cap: int, timeout_s: float) -> bytes:
    statement, why = reading_statement(con, sql)
    if statement is None:
        return answer({"status": "invalid", "detail": why})
    timer = threading.Timer(timeout_s, con.interrupt)
    started = time.perf_counter()
    timer.start()
    try:
        reader = con.sql(statement).to_arrow_reader(min(row_cap + 1, 100_000) or 1)
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > row_cap:
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
    finally:
        timer.cancel()
    elapsed_ms = (time.perf_counter() - started) * 1000
    truncated = table.num_rows > row_cap
    table = table.slice(0, row_cap)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return answer({"status": "ok", "truncated": truncated, "elapsed_ms": elapsed_ms}, sink.getvalue().to_pybytes())


def main() -> None:
    # The protocol owns the real stdout; anything else that prints goes to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        request = pickle.loads(read_frame(sys.stdin.buffer))
    except EOFError:
        return  # a spare that was never used: the parent went away
    write_frame(out, run(**request))
    out.close()
    os._exit(0)  # the answer is out; tearing down DuckDB and the interpreter would only add delay


if __name__ == "__main__":
    main()
