"""The exported files' rollups, kept between connections as tables of the shared DuckDB database.

``rollups(...)`` answers one file list's hourly and daily rollups and latency histograms (the
tables an ``Exported`` names), built once per file list and kept in a small LRU. A new file list
is usually the last one plus an export's new files: then the kept tables are extended instead of
read again from every file. The full-key latency histogram, the biggest and least asked for, is
built in the background (``latency_built`` says when it is there). ``analytics.warehouse`` is
the only caller; nothing here reads the system of record.
"""

from __future__ import annotations

import atexit
import itertools
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from analytics import shared_db
from analytics.views import (
    LATENCY_COARSE,
    ROLLUP_KEYS,
    Column,
    Exported,
    coarse_latency_sql,
    file_list,
    latency_files_sql,
    latency_sql,
    measures,
    rollup_files_sql,
    rollup_sql,
    rollup_types,
)

RETIRED_GRACE_S = 600  # an evicted rollup's tables stay this long for page runs still reading them
_lock = threading.Lock()

@dataclass(frozen=True)
class _Built:
    """Rollup tables kept for one file list, and what they cover, so the next list can start from them."""

    exported: Exported
    scope: tuple  # warehouse, workspace, the columns known and the columns now: a base must share them
    watermark: int  # the highest ledger id counted
    rows: int  # how many ledger rows the tables count
    depth: int  # how many times these tables were extended since they were read whole from files


_rollups: dict[tuple, _Built] = {}  # exported rollups by file list; small LRU
_retired_rollups: list[tuple[float, Exported]] = []  # evicted, in eviction order: dropped after a grace period
_rollup_ids = itertools.count(1)
ROLLUP_CACHE_SIZE = 8
LATENCY_BUILD_DELAY_S = 2.0  # see _build_latency_later
_latency_ready: set[str] = set()  # full-key latency tables that exist (the others are being built)
_latency_builds: list[threading.Timer] = []
MAX_EXTENSIONS = 10  # see rollups
rollup_builds = {"full": 0, "incremental": 0}  # how the kept rollups were made, since the process began


def clear() -> None:
    """Drop every kept rollup and cancel the builds waiting (a benchmark's cold start, tests)."""
    with _lock:
        dropped = [b.exported for b in _rollups.values()] + [e for _, e in _retired_rollups]
        _rollups.clear()
        _retired_rollups.clear()
        _latency_ready.clear()
        builds = list(_latency_builds)
        _latency_builds.clear()
    for timer in builds:
        timer.cancel()
        timer.join()
    _drop(dropped)


def rollups(root: Path, workspace_id: int, ledger_files: tuple[str, ...], rollup_files: tuple[str, ...],
                      latency_files: tuple[str, ...],
                      known: set[str], columns: list[Column], schemas: tuple[tuple[str, ...], ...],
                      parts: tuple[tuple[int, int, int], ...]) -> Exported:
    """The exported files' rollups, computed once per file list and kept as tables of the shared database.

    A new file list is usually the last one plus an export's new files, perhaps with small files
    compacted into one covering the same ids: then the kept tables are copied with only the new
    files' rows added, instead of reading every file again. Rows of one key can repeat that way
    (views always sum them), so after ``MAX_EXTENSIONS`` the tables are read whole again.
    """
    key = (rollup_files, latency_files, tuple(sorted(known)), tuple(c.name for c in columns), schemas)
    scope = (str(root), workspace_id, key[2], key[3])
    with _lock:
        if key in _rollups:
            _rollups[key] = _rollups.pop(key)  # most recently used last
            return _rollups[key].exported
        base = next((b for b in reversed(_rollups.values()) if b.scope == scope and b.depth < MAX_EXTENSIONS), None)
    name = f"rollups_{next(_rollup_ids)}"
    exported = Exported(f"{name}_hourly", f"{name}_daily", f"{name}_latency", f"{name}_latency_by_model",
                        f"{name}_latency_overall")
    con = shared_db.cursor()
    try:
        added = _new_rows(con, base, ledger_files, parts) if base is not None and parts and schemas else None
        picked, mixed = added if added is not None else (list(range(len(rollup_files))), [])
        # Rows of merged files above the watermark are rolled up from the ledger file, as the export does.
        above = [(ledger_files[i], [c for c in columns if c.name in set(schemas[i])]) for i in mixed]
        latency_made = _build(
            con, exported, base.exported if added is not None else None,
            [rollup_files[i] for i in picked], [latency_files[i] for i in picked],
            tuple(schemas[i] for i in picked) if schemas else (), known, columns,
            [(f"(SELECT * FROM read_parquet({file_list([path])}) WHERE id > {int(base.watermark)})", present)
             for path, present in above] if added is not None else [])
    finally:
        con.close()
    built = _Built(exported, scope, max((hi for _, hi, _ in parts), default=0), sum(n for _, _, n in parts),
                   0 if added is None else base.depth + 1)
    rollup_builds["incremental" if added is not None else "full"] += 1
    with _lock:
        _rollups[key] = built
        if latency_made:
            _latency_ready.add(exported.latency)
        while len(_rollups) > ROLLUP_CACHE_SIZE:
            _retired_rollups.append((time.time(), _rollups.pop(next(iter(_rollups))).exported))
        expired = [e for at, e in _retired_rollups if time.time() - at > RETIRED_GRACE_S]
        del _retired_rollups[:len(expired)]
    _drop(expired)
    if not latency_made:
        _build_latency_later(key, exported, latency_files, columns, schemas)
    return exported


def _new_rows(con, base: _Built, files: tuple[str, ...],
              parts: tuple[tuple[int, int, int], ...]) -> tuple[list[int], list[int]] | None:
    """Where the rows the kept tables did not count are: files wholly new (by index), and files that
    hold some (a compaction merged counted files with new ones); None when the tables cannot be
    extended.

    Every id counted is at or below the base's watermark and every new one above it. The rows at
    or below it must be exactly the rows counted: otherwise some were retired (a workspace
    deleted) and the tables are read whole again.
    """
    w = base.watermark
    old = [i for i, (_, hi, _) in enumerate(parts) if hi <= w]
    new = [i for i, (lo, _, _) in enumerate(parts) if lo > w]
    mixed = [i for i in range(len(parts)) if i not in set(old) | set(new)]
    counted = sum(parts[i][2] for i in old)
    if mixed:
        [(below,)] = con.execute(f"SELECT count(*) FROM read_parquet({file_list([files[i] for i in mixed])}, "
                                 f"union_by_name=true) WHERE id <= {int(w)}").fetchall()
        counted += below
    return (new, mixed) if counted == base.rows else None


def _build(con, exported: Exported, base: Exported | None, rollup_files: list[str], latency_files: list[str],
           schemas: tuple, known: set[str], columns: list[Column], rows: list[tuple[str, list[Column]]]) -> bool:
    """Create ``exported``'s tables: ``base``'s rows (if any), those of the given files, and ``rows``
    (ledger rows in their stored types, with their columns) rolled up here.

    The full-key latency histogram is the biggest and the least asked for (only filters on
    projects, people, kinds or tags need it): it is extended here only when ``base`` has it, and
    otherwise left to ``_build_latency_later``. Returns whether it was made.
    """
    types = rollup_types(columns)
    keys = ", ".join(f'"{k}"' for k in ROLLUP_KEYS if k in types)
    sums = ", ".join(f'CAST(sum("{n}") AS {types[n]}) AS "{n}"' for n, _, _ in measures(columns))

    def with_base(table: str | None, sql: str) -> str:
        return f"SELECT * FROM main.{table} UNION ALL BY NAME {sql}" if table else sql

    # Read as written: two files can share an hour (a key's rows are summed by whoever asks). In file
    # order, which is time order (DuckDB keeps it): each row group then spans a few days for its zone
    # map, without the cost of a sort.
    hourly = f"SELECT * FROM ({rollup_files_sql(rollup_files, known, columns, schemas)})"
    latency = f"SELECT * FROM ({latency_files_sql(latency_files, columns, schemas)})"
    for source, present in rows:
        hourly += f" UNION ALL BY NAME SELECT * FROM ({rollup_sql(source, present)})"
        latency += f" UNION ALL BY NAME SELECT * FROM ({latency_sql(source, present)})"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _new_hourly AS {hourly}")
    con.execute(f"CREATE TABLE main.{exported.hourly} AS {with_base(base and base.hourly, 'SELECT * FROM _new_hourly')}")
    daily = f"SELECT CAST(hour AS DATE) AS day, {keys}, {sums} FROM _new_hourly GROUP BY ALL ORDER BY day"
    con.execute(f"CREATE TABLE main.{exported.daily} AS {with_base(base and base.daily, f'({daily})')}")
    con.execute("DROP TABLE _new_hourly")
    for table, base_table, coarse in ((exported.latency_by_model, base and base.latency_by_model, "latency_by_model"),
                                      (exported.latency_overall, base and base.latency_overall, "latency_overall")):
        # Straight from the files: DuckDB decodes only the keys these need (no tag lists).
        fresh = f"(SELECT * FROM ({coarse_latency_sql(f'({latency})', LATENCY_COARSE[coarse])}) ORDER BY day)"
        con.execute(f"CREATE TABLE main.{table} AS {with_base(base_table, fresh)}")
    if base is None or not latency_built(base):
        return False
    con.execute(f"CREATE TABLE main.{exported.latency} AS {with_base(base.latency, latency)}")
    return True


def latency_built(exported: Exported) -> bool:
    with _lock:
        return exported.latency in _latency_ready


def _build_latency_later(key: tuple, exported: Exported, latency_files: tuple[str, ...], columns: list[Column],
                         schemas: tuple) -> None:
    """Build the full-key latency histogram from every file in a thread, once the page that asked
    for these rollups has had the machine to itself for a moment; until then ``connect`` shows the
    files themselves as that histogram."""
    def build() -> None:
        con = shared_db.cursor()
        try:
            con.execute(f"CREATE TABLE main.{exported.latency} AS "
                        f"{latency_files_sql(list(latency_files), columns, schemas)}")
        except duckdb.Error:  # dropped meanwhile (cleared or evicted): the files serve, as before
            return
        finally:
            con.close()
        with _lock:
            kept = key in _rollups and _rollups[key].exported is exported
            if kept:
                _latency_ready.add(exported.latency)
        if not kept:
            _drop([exported])

    timer = threading.Timer(LATENCY_BUILD_DELAY_S, build)
    timer.daemon = True
    with _lock:
        _latency_builds.append(timer)
    timer.start()


@atexit.register
def _cancel_builds() -> None:
    # A build still running when the interpreter exits would leave DuckDB's objects half torn down.
    with _lock:
        pending = list(_latency_builds)
        _latency_builds.clear()
    for timer in pending:
        timer.cancel()
        timer.join(10)


def wait_for_builds(timeout_s: float = 60.0) -> None:
    """Wait until the rollups being built in the background are done (benchmarks, tests)."""
    with _lock:
        pending = list(_latency_builds)
        _latency_builds.clear()
    for timer in pending:
        timer.join(timeout_s)


def _drop(gone: list[Exported]) -> None:
    """Drop evicted rollup tables, once no page run that started before the eviction can still read them."""
    if not gone:
        return
    con = shared_db.cursor()
    try:
        for e in gone:
            for table in (e.hourly, e.daily, e.latency, e.latency_by_model, e.latency_overall):
                con.execute(f"DROP TABLE IF EXISTS main.{table}")
            with _lock:
                _latency_ready.discard(e.latency)
    finally:
        con.close()
