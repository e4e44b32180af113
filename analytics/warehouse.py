"""The analytics warehouse: the usage ledger exported to Parquet, and DuckDB connections over it.

Layout under ``warehouse_dir()`` (``<data_dir>/warehouse`` unless a ``root`` is given)::

    manifest.json              the watermark and the list of live files: the only truth
    ledger/workspace=<id>/month=<YYYY-MM>/part-<lo>-<hi>-<token>.parquet   ledger rows, ids lo..hi
    rollup/workspace=<id>/month=<YYYY-MM>/part-<lo>-<hi>-<token>.parquet   the same rows by UTC hour
    latency/workspace=<id>/month=<YYYY-MM>/part-<lo>-<hi>-<token>.parquet  their latency histogram by UTC day

Months are those of ``created_at`` in UTC. ``refresh()`` appends the rows above the watermark
in batches. Each batch's files are written aside, fsynced and renamed into place; only then is
the manifest (watermark and file list together) replaced, atomically. Readers take their file
list from the manifest, never from a directory listing, so a crash between the two steps
leaves only unlisted files: the rerun exports the same rows again under new names, and nothing
is counted twice. A month's small files are compacted into one; files no manifest lists are
deleted after a grace period, so a reader still holding an older manifest can finish.

``connect(workspace_id)`` gives a connection to the process's in-memory DuckDB whose views show
one workspace (``analytics.views.attach`` lists them): the exported Parquet UNION ALL the rows not
yet exported (read from the system of record through Polars), so a dashboard is fresh to the
second. Columns come from ``LedgerEntry``'s table, so a
column added by a migration flows through; files written before it existed read it as NULL.
Money is read as an integer count of its smallest unit and scaled in DuckDB's exact decimals,
never through a float. Nothing here writes the system of record.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
from sqlalchemy import JSON, Boolean, Engine, Integer, String, Text, select

from analytics.views import (
    LATENCY_VALUE_SQL,
    ROLLUP_KEYS,
    Column,
    Exported,
    Snapshot,
    attach,
    file_list,
    latency_percentiles_sql,
    latency_sql,
    measures,
    rollup_sql,
    rollup_types,
)
from analytics import kept_rollups, shared_db
from engine import db
from engine.config import get_settings
from engine.dbtypes import ExactDecimal, UTCDateTime
from engine.models import LedgerEntry, Workspace

__all__ = [  # what pages' services and the sandbox use; the views' names are re-exported from analytics.views
    "ExportStats", "Exported", "LATENCY_VALUE_SQL", "ROLLUP_KEYS", "Snapshot", "attach", "clear_caches", "connect",
    "latency_percentiles_sql", "ledger_columns", "read_manifest", "refresh", "snapshot", "use_root", "warehouse_dir",
]

MANIFEST = "manifest.json"
FORMAT = 2
BATCH_ROWS = 250_000  # rows exported per step (memory grows with it): a file per workspace and month touched
QUERY_SLICE_ROWS = 50_000  # rows fetched from the database driver at a time
SMALL_FILE_ROWS = 100_000  # files smaller than this (frequent small exports) get compacted…
TARGET_FILE_ROWS = 4_000_000  # …into files of about this many rows, one month at a time
RETIRED_GRACE_S = 600  # a superseded file stays this long for readers holding an older manifest
PG_SETTLE = timedelta(seconds=60)  # see ``refresh``
SNAPSHOT_REUSE_S = 30.0  # ``connect(fresh=False)`` may reuse a tail read this recently
# ``tags`` is a JSON list of strings in the system of record; other JSON columns stay JSON text.
LIST_COLUMNS = {"tags"}
SUBDIRS = ("ledger", "rollup", "latency")


@dataclass(frozen=True)
class ExportStats:
    rows: int  # ledger rows exported by this call
    files: int  # Parquet files written (batches and compactions)
    compacted: int  # small files merged away
    watermark: int  # highest exported ledger id
    seconds: float


def ledger_columns() -> list[Column]:
    """Every ``usage_ledger`` column, read from the ORM table so new columns need no change here."""
    out = []
    for c in LedgerEntry.__table__.columns:
        t = c.type
        if isinstance(t, ExactDecimal):
            out.append(Column(c.name, "exact", t.places))
        elif isinstance(t, UTCDateTime):
            out.append(Column(c.name, "time"))
        elif isinstance(t, JSON):
            out.append(Column(c.name, "list" if c.name in LIST_COLUMNS else "json"))
        elif isinstance(t, Boolean):
            out.append(Column(c.name, "bool"))
        elif isinstance(t, Integer):
            out.append(Column(c.name, "int"))
        elif isinstance(t, (String, Text)):
            out.append(Column(c.name, "text"))
        else:
            raise TypeError(f"usage_ledger.{c.name}: the warehouse has no mapping for {t!r}")
    return out


# ---------------------------------------------------------------------------------------------
# Files: manifest, atomic writes, the export lock.


_root_override: Path | None = None


def warehouse_dir() -> Path:
    return _root_override or get_settings().data_dir / "warehouse"


def use_root(root: Path | None) -> None:
    """Point the process at another warehouse directory (tests, benchmarks); None restores the default."""
    global _root_override
    _root_override = Path(root) if root is not None else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, final: Path) -> None:
    """Make a fully written temp file durable, then atomically give it its final name."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    _fsync_dir(final.parent)


def _empty_manifest() -> dict:
    return {"format": FORMAT, "watermark": 0, "files": [], "retired": [], "workspaces": {}}


def read_manifest(root: Path | None = None) -> dict:
    path = (root or warehouse_dir()) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        return _empty_manifest()
    if manifest.get("format") != FORMAT:
        # Written by another version: start afresh; the old files are unlisted, so they get collected.
        return _empty_manifest()
    return manifest


def _write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    _publish(tmp, root / MANIFEST)


@contextmanager
def _export_lock(root: Path) -> Iterator[None]:
    """One exporter at a time per warehouse, across processes (the UI and the sidecar)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".export.lock", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _part_name(lo: int, hi: int) -> str:
    # Ids say what a file holds; the random suffix makes every file written a new name, so a
    # file is never replaced under a reader, and a cached rollup is never mistaken for another.
    return f"part-{lo:012d}-{hi:012d}-{secrets.token_hex(4)}.parquet"


def _copy_to(con: duckdb.DuckDBPyConnection, query: str, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    con.execute(f"COPY ({query}) TO '{tmp}' (FORMAT parquet, COMPRESSION zstd)")
    _publish(tmp, final)


# ---------------------------------------------------------------------------------------------
# Reading the system of record.


def _read_raw(engine: Engine, columns: list[Column], where: str, *, order_limit: int | None = None) -> pl.DataFrame:
    """Ledger rows matching ``where`` (trusted SQL: integers only) with raw column values."""
    dialect = engine.dialect.name
    quote = engine.dialect.identifier_preparer.quote
    sql = f"SELECT {', '.join(c.raw_sql(dialect, quote) for c in columns)} FROM usage_ledger WHERE {where}"
    if order_limit is not None:
        sql += f" ORDER BY id LIMIT {int(order_limit)}"
    return _query(engine, sql, {c.name: _raw_dtype(c) for c in columns})


def _raw_dtype(column: Column) -> pl.DataType:
    return pl.String if column.kind in ("time", "list", "json", "text") else pl.Int64


def _query(engine: Engine, sql: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    raw = engine.raw_connection()
    try:
        # In slices, so that only one slice at a time exists as Python objects.
        frames = list(pl.read_database(sql, raw.driver_connection, iter_batches=True, batch_size=QUERY_SLICE_ROWS,
                                       schema_overrides=schema, infer_schema_length=None))
        frame = pl.concat(frames, how="vertical", rechunk=False) if frames else pl.DataFrame(schema=schema)
        if engine.dialect.name != "sqlite":
            raw.driver_connection.rollback()  # end the read transaction psycopg opened
        return frame
    finally:
        raw.close()


def _converted(con: duckdb.DuckDBPyConnection, raw: pl.DataFrame, columns: list[Column]) -> pa.Table:
    con.register("_raw", raw.to_arrow())
    try:
        select = ", ".join(f'{c.convert_sql()} AS "{c.name}"' for c in columns)
        return con.sql(f"SELECT {select} FROM _raw").to_arrow_table()
    finally:
        con.unregister("_raw")


def _file_order(entry: dict) -> tuple:
    """Manifest order: by workspace, then month, then ids (readers rely on newest being last)."""
    return entry["workspace_id"], entry["month"], entry["lo"]


def _paths(entry: dict) -> tuple[str, ...]:
    """The files one manifest entry stands for: ledger rows and the rollups made from them."""
    return (entry["path"], entry["rollup"], entry["latency"])


# ---------------------------------------------------------------------------------------------
# Export.


def refresh(engine: Engine | None = None, *, root: Path | None = None, settle: timedelta | None = None,
            batch_rows: int = BATCH_ROWS) -> ExportStats:
    """Export the ledger rows above the watermark, compact small files, drop long-retired ones.

    ``settle``: rows created less than this long ago wait for the next run. On PostgreSQL ids come
    from a sequence and transactions can commit out of id order, so a row with a lower id could
    still appear after a higher one was exported; waiting a minute (ledger writes are short
    transactions) closes that gap, and ``connect`` shows those rows from the tail meanwhile.
    SQLite serialises writers, so ids commit in order there and nothing needs to wait.
    """
    engine = engine or db.get_engine()
    root = root or warehouse_dir()
    if settle is None:
        settle = timedelta(0) if engine.dialect.name == "sqlite" else PG_SETTLE
    started = time.perf_counter()
    columns = ledger_columns()
    rows = files = 0
    with _export_lock(root):
        manifest = read_manifest(root)
        _reconcile(engine, root, manifest)
        con = shared_db.cursor()
        try:
            while True:
                now = datetime.now(UTC)
                raw = _read_raw(engine, columns, f"id > {int(manifest['watermark'])}", order_limit=batch_rows)
                if raw.is_empty():
                    break
                batch = _converted(con, raw, columns)
                del raw
                written, complete = _export_batch(engine, con, root, manifest, batch, columns, now, settle)
                rows, files = rows + written[0], files + written[1]
                if complete or len(batch) < batch_rows:
                    break
            compacted, merged_files = _compact(con, root, manifest, columns)
            files += merged_files
            _collect_garbage(root, manifest)
        finally:
            con.close()
    return ExportStats(rows, files, compacted, int(manifest["watermark"]), time.perf_counter() - started)


def _workspaces(engine: Engine) -> dict[str, str]:
    """Each workspace's id and creation time: a workspace id that comes back after a deletion
    (SQLite reuses the highest id) must not inherit the deleted workspace's exports."""
    with engine.connect() as conn:
        rows = conn.execute(select(Workspace.id, Workspace.created_at)).all()
    return {str(i): created.isoformat() for i, created in rows}


def _reconcile(engine: Engine, root: Path, manifest: dict) -> None:
    """Retire exports the system of record no longer backs.

    The ledger is append-only but for deleting a whole workspace. Its files then go, and since
    SQLite (no AUTOINCREMENT here) hands the highest ids out again, the watermark moves back to
    below the first id they held, retiring every file that reaches above it so that those ids
    are exported afresh, once. The same happens if the newest rows vanished by any other route.
    """
    current = _workspaces(engine)
    known = manifest.setdefault("workspaces", {})
    vanished = {int(w) for w, created in known.items() if current.get(w) != created}
    with engine.connect() as conn:
        top = conn.exec_driver_sql("SELECT max(id) FROM usage_ledger").scalar() or 0
    watermark = int(manifest["watermark"])
    gone = [f for f in manifest["files"] if f["workspace_id"] in vanished]
    if gone:
        watermark = min(watermark, min(f["lo"] for f in gone) - 1)
    watermark = min(watermark, int(top))
    while True:
        above = [f for f in manifest["files"] if f["hi"] > watermark and f not in gone]
        if not above:
            break
        gone += above
        watermark = min(watermark, min(f["lo"] for f in above) - 1)
    if not gone and watermark == manifest["watermark"] and not vanished:
        return
    now = time.time()
    dropped = {f["path"] for f in gone}
    manifest["files"] = [f for f in manifest["files"] if f["path"] not in dropped]
    manifest["retired"] += [{"path": p, "at": now} for f in gone for p in _paths(f)]
    manifest["watermark"] = watermark
    for w in vanished:
        known.pop(str(w), None)
    _write_manifest(root, manifest)


def _export_batch(engine: Engine, con, root: Path, manifest: dict, batch: pa.Table, columns: list[Column],
                  now: datetime, settle: timedelta) -> tuple[tuple[int, int], bool]:
    """Write one batch's files, then move the watermark. Returns ((rows, files), reached_unsettled)."""
    con.register("_batch", batch)
    try:
        unsettled = None
        if settle:  # the first row that may still have lower ids committing around it; a far-future
            # created_at (bad data) is not a write in flight and must not hold the export back
            window = [(now - settle).replace(tzinfo=None), (now + settle).replace(tzinfo=None)]
            unsettled = con.execute("SELECT min(id) FROM _batch WHERE created_at >= ? AND created_at < ?",
                                    window).fetchone()[0]
        limit = f"id < {int(unsettled)}" if unsettled is not None else "TRUE"
        lo, hi, count = con.execute(f"SELECT min(id), max(id), count(*) FROM _batch WHERE {limit}").fetchone()
        if not count:
            return (0, 0), True
        groups = con.execute(
            f"SELECT workspace_id, strftime(created_at, '%Y-%m') AS month, count(*) FROM _batch WHERE {limit} "
            "GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        names = [c.name for c in columns]
        new = []
        created = _workspaces(engine)
        for workspace_id, month, n in groups:
            manifest["workspaces"][str(workspace_id)] = created[str(workspace_id)]
            part = f"workspace={int(workspace_id)}/month={month}/{_part_name(int(lo), int(hi))}"
            where = f"{limit} AND workspace_id = {int(workspace_id)} AND strftime(created_at, '%Y-%m') = '{month}'"
            _copy_to(con, f"SELECT * FROM _batch WHERE {where} ORDER BY id", root / "ledger" / part)
            _copy_to(con, rollup_sql(f"(SELECT * FROM _batch WHERE {where})", columns), root / "rollup" / part)
            _copy_to(con, latency_sql(f"(SELECT * FROM _batch WHERE {where})", columns), root / "latency" / part)
            new.append({"path": f"ledger/{part}", "rollup": f"rollup/{part}", "latency": f"latency/{part}",
                        "workspace_id": int(workspace_id),
                        "month": month, "lo": int(lo), "hi": int(hi), "rows": int(n), "columns": names})
    finally:
        con.unregister("_batch")
    manifest["files"] = sorted(manifest["files"] + new, key=_file_order)
    manifest["watermark"] = int(hi)
    _write_manifest(root, manifest)
    return (int(count), 3 * len(new)), unsettled is not None


def _compact(con, root: Path, manifest: dict, columns: list[Column]) -> tuple[int, int]:
    """Merge each month's small files into one (per workspace); returns (files merged away, files written)."""
    by_partition: dict[tuple[int, str], list[dict]] = {}
    for f in manifest["files"]:
        by_partition.setdefault((f["workspace_id"], f["month"]), []).append(f)
    groups = []
    for parts in by_partition.values():
        run: list[dict] = []
        for f in sorted((f for f in parts if f["rows"] < SMALL_FILE_ROWS), key=lambda f: f["lo"]):
            run.append(f)
            if sum(x["rows"] for x in run) >= TARGET_FILE_ROWS:
                groups.append(run)
                run = []
        groups.append(run)
    groups = [g for g in groups if len(g) > 1]
    if not groups:
        return 0, 0
    merged_away = written = 0
    now = time.time()
    for group in groups:
        workspace_id, month = group[0]["workspace_id"], group[0]["month"]
        lo, hi = min(f["lo"] for f in group), max(f["hi"] for f in group)
        part = f"workspace={workspace_id}/month={month}/{_part_name(lo, hi)}"
        # The group is in id order and the files hold disjoint id ranges, so reading them in that
        # order keeps the rows sorted without a sort (which would hold them all in memory).
        data = file_list([root / f["path"] for f in group])
        _copy_to(con, f"SELECT * FROM read_parquet({data}, union_by_name=true)", root / "ledger" / part)
        known = set().union(*(f["columns"] for f in group))
        present = [c for c in columns if c.name in known]
        types = rollup_types(present)
        rollups = file_list([root / f["rollup"] for f in group])
        keys = ["hour", *(k for k in ROLLUP_KEYS if k in known)]
        sums = ", ".join(
            f'CAST({again} AS {types[name]}) AS "{name}"' for name, _, again in measures(present)
        )
        key_list = ", ".join(f'"{k}"' for k in keys)
        _copy_to(
            con,
            f"SELECT {key_list}, {sums} FROM read_parquet({rollups}, union_by_name=true) GROUP BY ALL",
            root / "rollup" / part,
        )
        histograms = file_list([root / f["latency"] for f in group])
        _copy_to(
            con,
            f"SELECT * EXCLUDE (calls), CAST(sum(calls) AS BIGINT) AS calls "
            f"FROM read_parquet({histograms}, union_by_name=true) GROUP BY ALL",
            root / "latency" / part,
        )
        merged = {"path": f"ledger/{part}", "rollup": f"rollup/{part}", "latency": f"latency/{part}",
                  "workspace_id": workspace_id,
                  "month": month, "lo": lo, "hi": hi, "rows": sum(f["rows"] for f in group),
                  "columns": [c.name for c in columns if c.name in known]}
        gone = {f["path"] for f in group}
        manifest["files"] = [f for f in manifest["files"] if f["path"] not in gone] + [merged]
        manifest["retired"] += [{"path": p, "at": now} for f in group for p in _paths(f)]
        merged_away += len(group)
        written += 3
    manifest["files"].sort(key=_file_order)
    _write_manifest(root, manifest)
    return merged_away, written


def _collect_garbage(root: Path, manifest: dict) -> None:
    """Delete retired files past their grace period, and leftovers of crashed runs."""
    now = time.time()
    live = {p for f in manifest["files"] for p in _paths(f)}
    keep, expired = [], []
    for r in manifest["retired"]:
        (expired if now - r["at"] >= RETIRED_GRACE_S else keep).append(r)
    waiting = {r["path"] for r in keep}
    for sub in SUBDIRS:
        for path in (root / sub).rglob("*") if (root / sub).exists() else ():
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in live and rel not in waiting and now - path.stat().st_mtime >= RETIRED_GRACE_S:
                path.unlink(missing_ok=True)
    for r in expired:
        (root / r["path"]).unlink(missing_ok=True)
    if len(keep) != len(manifest["retired"]):
        manifest["retired"] = keep
        _write_manifest(root, manifest)


# ---------------------------------------------------------------------------------------------
# Reading the warehouse.


_cache_lock = threading.Lock()
_snapshots: dict[tuple, Snapshot] = {}


rollup_builds = kept_rollups.rollup_builds  # how connections' rollups were made: read whole or extended
wait_for_builds = kept_rollups.wait_for_builds


def clear_caches() -> None:
    """Forget the kept rollups and tail snapshots (a benchmark's cold start)."""
    with _cache_lock:
        _snapshots.clear()
    kept_rollups.clear()


def snapshot(workspace_id: int, *, fresh: bool = True, root: Path | None = None,
             engine: Engine | None = None) -> Snapshot:
    """Read the manifest, the not-yet-exported tail and the dimension tables for one workspace."""
    engine = engine or db.get_engine()
    root = root or warehouse_dir()
    workspace_id = int(workspace_id)
    manifest = read_manifest(root)
    key = (str(root), str(engine.url), workspace_id)
    if not fresh:
        with _cache_lock:
            cached = _snapshots.get(key)
        if cached is not None and time.time() - cached.taken_at < SNAPSHOT_REUSE_S and \
                cached.files == _files_for(root, manifest, workspace_id):
            return cached
    snap = _take_snapshot(engine, root, manifest, workspace_id)
    with _cache_lock:
        _snapshots[key] = snap
    return snap


def _files_for(root: Path, manifest: dict, workspace_id: int) -> tuple[str, ...]:
    return tuple(str(root / f["path"]) for f in manifest["files"] if f["workspace_id"] == workspace_id)


def _take_snapshot(engine: Engine, root: Path, manifest: dict, workspace_id: int) -> Snapshot:
    columns = ledger_columns()
    mine = [f for f in manifest["files"] if f["workspace_id"] == workspace_id]
    known = set().union(*(f["columns"] for f in mine)) if mine else set()
    rollup_files = tuple(str(root / f["rollup"]) for f in mine)
    latency_files = tuple(str(root / f["latency"]) for f in mine)
    schemas = tuple(tuple(f["columns"]) for f in mine)
    parts = tuple((int(f["lo"]), int(f["hi"]), int(f["rows"])) for f in mine)
    hourly = kept_rollups.rollups(root, workspace_id, _files_for(root, manifest, workspace_id), rollup_files, latency_files, known, columns, schemas, parts).hourly
    con = shared_db.cursor()
    try:
        con.execute(f"CREATE TEMP VIEW _hourly AS SELECT * FROM main.{hourly}")
        # On SQLite "+" keeps the planner on the rowid range (the tail is small) rather than
        # walking the workspace's whole (workspace_id, created_at) index.
        scope = "+workspace_id" if engine.dialect.name == "sqlite" else "workspace_id"
        raw = _read_raw(engine, columns, f"{scope} = {workspace_id} AND id > {int(manifest['watermark'])}")
        tail = _converted(con, raw, columns)
        con.register("_tail", tail)
        user_ids = [r[0] for r in con.sql(
            "SELECT user_id FROM _hourly WHERE user_id IS NOT NULL UNION SELECT user_id FROM _tail WHERE user_id IS NOT NULL"
        ).fetchall()]
    finally:
        con.close()
    projects, clients, users = _dimensions(engine, workspace_id, user_ids)
    directories = tuple(str(root / sub / f"workspace={workspace_id}") for sub in SUBDIRS)
    return Snapshot(
        workspace_id, directories, _files_for(root, manifest, workspace_id),
        rollup_files, latency_files, tuple(c.name for c in columns if c.name in known),
        tail, projects, clients, users, tuple(columns), time.time(), schemas, parts,
    )


def _dimensions(engine: Engine, workspace_id: int, user_ids: list[int]) -> tuple[pa.Table, pa.Table, pa.Table]:
    ws = int(workspace_id)
    projects = _query(
        engine,
        "SELECT id, name, client_id, CASE WHEN archived_at IS NULL THEN 0 ELSE 1 END AS archived "
        f"FROM projects WHERE workspace_id = {ws} ORDER BY id",
        {"id": pl.Int64, "name": pl.String, "client_id": pl.Int64, "archived": pl.Int64},
    ).with_columns(pl.col("archived").cast(pl.Boolean))
    clients = _query(engine, f"SELECT id, name FROM clients WHERE workspace_id = {ws} ORDER BY id",
                     {"id": pl.Int64, "name": pl.String})
    # Members, and anyone who has left but still has rows in this workspace's ledger.
    seen = " OR id IN (" + ", ".join(str(int(u)) for u in user_ids) + ")" if user_ids else ""
    users = _query(
        engine,
        f"SELECT id, name, email FROM users WHERE id IN (SELECT user_id FROM memberships WHERE workspace_id = {ws})"
        f"{seen} ORDER BY id",
        {"id": pl.Int64, "name": pl.String, "email": pl.String},
    )
    return projects.to_arrow(), clients.to_arrow(), users.to_arrow()


def connect(workspace_id: int, *, fresh: bool = True, root: Path | None = None,
            engine: Engine | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection showing one workspace's ledger (see ``attach`` for the views).

    ``fresh``: read the not-yet-exported tail from the system of record now. With False, a tail
    read in the last ``SNAPSHOT_REUSE_S`` seconds may be reused (a page's several queries in one run).
    """
    root = root or warehouse_dir()
    snap = snapshot(workspace_id, fresh=fresh, root=root, engine=engine)
    exported = kept_rollups.rollups(root, snap.workspace_id, snap.files, snap.rollup_files, snap.latency_files, set(snap.file_columns),
                                 ledger_columns(), snap.file_schemas, snap.file_parts)
    if not kept_rollups.latency_built(exported):
        exported = replace(exported, latency=None)  # still being built: the files serve meanwhile
    con = shared_db.cursor()
    attach(con, snap, exported)
    return con
