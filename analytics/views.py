"""The views a workspace's DuckDB connection shows, and the SQL that builds the warehouse's rollups.

Kept apart from ``analytics.warehouse`` (which exports the ledger and reads the system of record)
so that the SQL sandbox's worker process can build the same views while importing no more than
DuckDB and Arrow: a worker starts the faster for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

# Integer columns that are neither ids nor amounts to add up.
NOT_SUMMED = {"attempt"}
TIMING_COLUMNS = {"latency_ms", "ttft_ms"}  # summed and counted, for averages
ROLLUP_KEYS = ("workspace_id", "provider", "model", "project_id", "user_id", "kind", "status", "tags")
# Percentiles cannot be summed, but histograms can: latency_ms is counted per UTC day, rollup key
# and logarithmic bucket, each bucket 2% wider than the one below, so a percentile read from the
# buckets (``LATENCY_VALUE_SQL``) is within 1% of the exact one.
LATENCY_GAMMA = 1.02
LATENCY_BUCKET_SQL = f"CAST(round(ln(greatest(latency_ms, 1)) / ln({LATENCY_GAMMA})) AS INTEGER)"
LATENCY_VALUE_SQL = f"exp(latency_bucket * ln({LATENCY_GAMMA}))"  # a bucket's middle, in ms
# Coarser histograms for questions that need fewer keys: a quarter and a fortieth of the rows to read.
LATENCY_COARSE = {"latency_overall": ("status",), "latency_by_model": ("provider", "model", "status")}  # smallest first


@dataclass(frozen=True)
class Column:
    """How one ledger column travels: raw from the database, stored in Parquet, shown in ``ledger``."""

    name: str
    kind: str  # exact | time | list | json | bool | int | text
    places: int = 0

    @property
    def stored_type(self) -> str:
        return {
            "exact": f"DECIMAL(18,{self.places})",  # int64 in Parquet: fast scans, exact sums
            "time": "TIMESTAMP", "list": "VARCHAR[]", "json": "VARCHAR", "bool": "BOOLEAN",
            "int": "BIGINT", "text": "VARCHAR",
        }[self.kind]

    @property
    def view_type(self) -> str:
        return f"DECIMAL(38,{self.places})" if self.kind == "exact" else self.stored_type

    def raw_sql(self, dialect: str, quote) -> str:
        """The column as the database hands it over cheaply: money as an integer count, time as text."""
        q = quote(self.name)
        if dialect == "sqlite":
            return q  # Money/ExactDecimal are already integer counts; datetimes ISO text
        if self.kind == "exact":
            return f"({q} * {10 ** self.places})::bigint AS {q}"
        if self.kind == "time":
            return f"to_char({q} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS {q}"
        if self.kind in ("list", "json"):
            return f"{q}::text AS {q}"
        if self.kind == "bool":
            return f"{q}::int AS {q}"
        return q

    def convert_sql(self) -> str:
        """DuckDB: raw value to the stored type, exactly."""
        q = f'"{self.name}"'
        if self.kind == "exact":
            if not self.places:
                return f"CAST({q} AS DECIMAL(18,0))"
            unit = f"CAST('0.{'0' * (self.places - 1)}1' AS DECIMAL({self.places + 1},{self.places}))"
            return f"CAST(CAST({q} AS DECIMAL(27,0)) * {unit} AS {self.stored_type})"
        if self.kind == "list":
            return f"CAST(from_json({q}, '[\"VARCHAR\"]') AS VARCHAR[])"
        return f"CAST({q} AS {self.stored_type})"


def measures(columns: list[Column]) -> list[tuple[str, str, str]]:
    """The rollup's summed columns: (output name, aggregate over ledger rows, aggregate over rollups)."""
    out = [("calls", "count(*)", "sum(calls)")]
    for c in columns:
        q = f'"{c.name}"'
        if c.kind == "exact":
            out.append((c.name, f"sum({q})", f"sum({q})"))
        elif c.kind == "int" and c.name in TIMING_COLUMNS:
            out.append((f"{c.name}_sum", f"sum({q})", f'sum("{c.name}_sum")'))
            out.append((f"{c.name}_count", f"count({q})", f'sum("{c.name}_count")'))
        elif c.kind == "int" and c.name != "id" and not c.name.endswith("_id") and c.name not in NOT_SUMMED:
            out.append((c.name, f"sum({q})", f"sum({q})"))
        elif c.kind == "bool":
            out.append((f"{c.name}_calls", f"count_if({q})", f'sum("{c.name}_calls")'))
    return out


def rollup_types(columns: list[Column]) -> dict[str, str]:
    """DuckDB type of each rollup column (sums of DECIMAL(18,p) are DECIMAL(38,p); of BIGINT, HUGEINT)."""
    by_name = {c.name: c for c in columns}
    types = {"hour": "TIMESTAMP", **{k: by_name[k].view_type for k in ROLLUP_KEYS if k in by_name}}
    for name, _, _ in measures(columns):
        base = by_name.get(name)
        types[name] = base.view_type if base is not None and base.kind == "exact" else "BIGINT"
    return types


def rollup_sql(source: str, columns: list[Column]) -> str:
    """``source``'s rows summed by UTC hour and ``ROLLUP_KEYS``: the hourly rollup."""
    present = {c.name for c in columns}
    keys = ", ".join(f'"{k}"' for k in ROLLUP_KEYS if k in present)
    aggs = ", ".join(f'{agg} AS "{name}"' for name, agg, _ in measures(columns))
    return f"SELECT date_trunc('hour', created_at) AS hour, {keys}, {aggs} FROM {source} GROUP BY ALL"


def latency_sql(source: str, columns: list[Column]) -> str:
    """``source``'s latencies counted by UTC day, ``ROLLUP_KEYS`` and bucket: the latency histogram."""
    present = {c.name for c in columns}
    keys = ", ".join(f'"{k}"' for k in ROLLUP_KEYS if k in present)
    return (f"SELECT CAST(created_at AS DATE) AS day, {keys}, {LATENCY_BUCKET_SQL} AS latency_bucket, "
            f"count(*) AS calls FROM {source} WHERE latency_ms IS NOT NULL GROUP BY ALL")


def coarse_latency_sql(histogram: str, keys: tuple[str, ...]) -> str:
    """``histogram`` (a latency histogram by day and ``ROLLUP_KEYS``) summed down to day, ``keys`` and bucket."""
    cols = ", ".join(f'"{k}"' for k in ("day", *keys, "latency_bucket"))
    return f"SELECT {cols}, CAST(sum(calls) AS BIGINT) AS calls FROM {histogram} GROUP BY ALL"


def file_list(paths: list[Path] | list[str]) -> str:
    return "[" + ", ".join(f"'{p}'" for p in paths) + "]"


def by_schema(files: list, schemas: tuple[tuple[str, ...], ...] | list) -> list[tuple[set[str] | None, list]]:
    """Runs of consecutive files with one column set, in order: each run is read by one ``read_parquet``.

    ``union_by_name`` would read mixed sets in one go, but it reads every file's schema each time
    a query is planned, which at forty files costs more than most queries take to run. Without
    ``schemas`` (older callers) one run of unknown columns (None) is read by name.
    """
    if not schemas:
        return [(None, list(files))] if files else []
    runs: list[tuple[set[str] | None, list]] = []
    for path, schema in zip(files, schemas):
        if runs and runs[-1][0] == set(schema):
            runs[-1][1].append(path)
        else:
            runs.append((set(schema), [path]))
    return runs


def _read(paths: list, have: set[str] | None, extra: str = "") -> str:
    return f"read_parquet({file_list(paths)}{'' if have is not None else ', union_by_name=true'}{extra})"


def rollup_files_sql(files: list, known: set[str], columns: list[Column], schemas: tuple = ()) -> str:
    """The rollup files as one relation with today's rollup columns (NULL where a file predates one).

    ``schemas``: the ledger columns of each file's rows (the manifest's), as ``files``.
    """
    types = rollup_types(columns)
    if not files:
        return "SELECT " + ", ".join(f'CAST(NULL AS {t}) AS "{n}"' for n, t in types.items()) + " LIMIT 0"
    parts = []
    for ledger_columns, paths in by_schema(files, schemas):
        have = set(rollup_types([c for c in columns if c.name in (ledger_columns or known)]))
        cols = ", ".join(f'"{n}"' if n in have else f'CAST(NULL AS {types[n]}) AS "{n}"' for n in types)
        parts.append(f"SELECT {cols} FROM {_read(paths, ledger_columns)}")
    return " UNION ALL ".join(parts)


def latency_files_sql(files: list, columns: list[Column], schemas: tuple = ()) -> str:
    """The latency histogram files as one relation (``schemas`` as for ``rollup_files_sql``)."""
    present = {c.name for c in columns}
    names = ["day", *(k for k in ROLLUP_KEYS if k in present), "latency_bucket", "calls"]
    types = {"day": "DATE", **rollup_types(columns), "latency_bucket": "INTEGER", "calls": "BIGINT"}
    if not files:
        return "SELECT " + ", ".join(f'CAST(NULL AS {types[n]}) AS "{n}"' for n in names) + " LIMIT 0"
    parts = []
    for ledger_columns, paths in by_schema(files, schemas):
        have = {"day", "latency_bucket", "calls"} | (ledger_columns if ledger_columns is not None else present)
        cols = ", ".join(f'"{n}"' if n in have else f'CAST(NULL AS {types[n]}) AS "{n}"' for n in names)
        parts.append(f"SELECT {cols} FROM {_read(paths, ledger_columns)}")
    return " UNION ALL ".join(parts)


@dataclass(frozen=True)
class Exported:
    """The exported rows' rollups, kept between connections as tables of the process's shared
    in-memory DuckDB (``analytics.kept_rollups``): native tables in time order, so a period's rows
    are found by their zone maps instead of a scan of everything kept."""

    hourly: str  # table names in that database's main schema
    daily: str
    latency: str | None  # None while it is being built: the latency files are read instead
    latency_by_model: str  # ``latency`` summed over every key but provider, model and status
    latency_overall: str  # and over those too: by day, status and bucket alone


@dataclass(frozen=True)
class Snapshot:
    """What one workspace's views are made of; plain data, so it can be sent to a sandbox process."""

    workspace_id: int
    directories: tuple[str, ...]  # the directories holding this workspace's files (and no other's)
    files: tuple[str, ...]  # absolute paths of its exported ledger files, as of the manifest read
    rollup_files: tuple[str, ...]  # and of their hourly rollups
    latency_files: tuple[str, ...]  # and of their latency histograms
    file_columns: tuple[str, ...]  # ledger columns present in at least one of the files
    tail: pa.Table  # rows above the watermark, in the stored types
    projects: pa.Table
    clients: pa.Table
    users: pa.Table
    columns: tuple[Column, ...]  # the ledger's columns when the snapshot was taken
    taken_at: float
    file_schemas: tuple[tuple[str, ...], ...] = ()  # each file's columns, as ``files``; empty: unknown
    file_parts: tuple[tuple[int, int, int], ...] = ()  # each file's first and last ledger id and rows, as ``files``


def _shown(c: Column) -> str:
    # Cast only what changes type: a cast on, say, created_at would keep DuckDB from pushing a
    # filter on it into the Parquet scan, and so from skipping row groups outside the period.
    return f'CAST("{c.name}" AS {c.view_type}) AS "{c.name}"' if c.view_type != c.stored_type else f'"{c.name}"'


# Files live under .../workspace=<id>/month=<YYYY-MM>/: read as hive partitions, a filter on ``month``
# drops other months' files before any is opened (each file opened costs a query about half a millisecond).
HIVE = "hive_partitioning=true, hive_types={'workspace': BIGINT, 'month': VARCHAR}"
MONTH_SQL = "strftime(created_at, '%Y-%m')"  # a ledger row's UTC month, as its file's partition names it


def _files_relation(snap: Snapshot, columns: list[Column]) -> str:
    """The exported ledger files as one relation of ``columns`` and ``month``, newest files first.

    Newest first: a "latest rows" query fills its top-N from the first row groups it reads,
    skipping older ones by their created_at.
    """
    parts = []
    for have, paths in by_schema(list(reversed(snap.files)), tuple(reversed(snap.file_schemas))):
        present = have if have is not None else set(snap.file_columns)
        cols = ", ".join(_shown(c) if c.name in present else f'CAST(NULL AS {c.view_type}) AS "{c.name}"'
                         for c in columns)
        parts.append(f"SELECT {cols}, month FROM {_read(paths, have, ', ' + HIVE)}")
    return " UNION ALL ".join(parts)


def attach(con: duckdb.DuckDBPyConnection, snap: Snapshot, exported: Exported | None = None) -> None:
    """Create the workspace's views on ``con``.

    * ``ledger``: every ``usage_ledger`` column under its own name; money and other exact amounts
      as DECIMAL(38,places), ``created_at`` as a UTC TIMESTAMP, ``tags`` as VARCHAR[] (a list),
      other JSON columns as JSON text.
    * ``ledger_by_month``: ``ledger`` with each row's UTC ``month`` ('YYYY-MM'); a filter on it
      opens only those months' files, so a dashboard's scan of a few days stays fast at any size.
    * ``ledger_hourly`` (``hour``, a UTC TIMESTAMP) and ``ledger_daily`` (``day``, a UTC DATE):
      the ledger summed by ``ROLLUP_KEYS``: ``calls``, each usage count and money column,
      ``latency_ms_sum``/``latency_ms_count`` (and ``ttft_ms_…``), ``priced_calls``. A key can
      have more than one row (exported and not yet exported rows), so always aggregate them.
    * ``ledger_latency_daily``: how many calls (``calls``) had a ``latency_ms`` in each logarithmic
      ``latency_bucket``, by UTC ``day`` and ``ROLLUP_KEYS``; ``LATENCY_VALUE_SQL`` turns a bucket
      back into milliseconds (within 1%), so percentiles over any days need no raw rows.
      ``ledger_latency_by_model`` and ``ledger_latency_overall`` are the same counts with fewer
      keys (``LATENCY_COARSE``), for questions that need no more.
    * ``projects(id, name, client_id, archived)``, ``clients(id, name)``, ``users(id, name, email)``.

    ``exported``: the exported rows' hourly and daily rollups already in memory (``connect`` keeps
    them between calls); without them the rollup views read the rollup files.
    """
    columns = list(snap.columns)
    known = set(snap.file_columns)
    for name, table in (("_tail", snap.tail), ("_projects", snap.projects), ("_clients", snap.clients),
                        ("_users", snap.users)):
        con.register(name, table)
    types = rollup_types(columns)
    keys = ", ".join(f'"{k}"' for k in ROLLUP_KEYS if k in types)
    sums = ", ".join(f'CAST(sum("{n}") AS {types[n]}) AS "{n}"' for n, _, _ in measures(columns))
    if exported is not None:
        for view, table in (("_hourly", exported.hourly), ("_daily", exported.daily), ("_latency", exported.latency),
                            ("_latency_by_model", exported.latency_by_model),
                            ("_latency_overall", exported.latency_overall)):
            source = f"main.{table}" if table else f"({latency_files_sql(list(snap.latency_files), columns, snap.file_schemas)})"
            con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {source}")
    else:
        con.execute(f"CREATE OR REPLACE TEMP VIEW _hourly AS {rollup_files_sql(list(snap.rollup_files), known, columns, snap.file_schemas)}")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _daily AS SELECT CAST(hour AS DATE) AS day, {keys}, {sums} "
                    "FROM _hourly GROUP BY ALL")
        con.execute(f"CREATE OR REPLACE TEMP VIEW _latency AS {latency_files_sql(list(snap.latency_files), columns, snap.file_schemas)}")
        for name, keys in LATENCY_COARSE.items():
            con.execute(f"CREATE OR REPLACE TEMP VIEW _{name} AS {coarse_latency_sql('_latency', keys)}")
    tail_cols = ", ".join(_shown(c) for c in columns)
    by_month = f"SELECT {tail_cols}, {MONTH_SQL} AS month FROM _tail"
    if snap.files:
        by_month = f"{_files_relation(snap, columns)} UNION ALL {by_month}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW ledger_by_month AS {by_month}")
    con.execute("CREATE OR REPLACE TEMP VIEW ledger AS SELECT * EXCLUDE (month) FROM ledger_by_month")
    names = ", ".join(f'"{n}"' for n in types if n != "hour")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _tail_hourly AS {rollup_sql('_tail', columns)}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW ledger_hourly AS SELECT hour, {names} FROM _hourly "
                f"UNION ALL SELECT hour, {names} FROM _tail_hourly")
    con.execute(f"CREATE OR REPLACE TEMP VIEW ledger_daily AS SELECT day, {names} FROM _daily "
                f"UNION ALL SELECT CAST(hour AS DATE) AS day, {names} FROM _tail_hourly")
    latency_names = ", ".join(f'"{k}"' for k in ["day", *(k for k in ROLLUP_KEYS if k in types), "latency_bucket", "calls"])
    con.execute(f"CREATE OR REPLACE TEMP VIEW ledger_latency_daily AS SELECT {latency_names} FROM _latency "
                f"UNION ALL SELECT {latency_names} FROM ({latency_sql('_tail', columns)})")
    tail_latency = f"({latency_sql('_tail', columns)})"
    for name, keys in LATENCY_COARSE.items():
        con.execute(f"CREATE OR REPLACE TEMP VIEW ledger_{name} AS SELECT * FROM _{name} "
                    f"UNION ALL {coarse_latency_sql(tail_latency, keys)}")
    con.execute("CREATE OR REPLACE TEMP VIEW projects AS SELECT id, name, client_id, archived FROM _projects")
    con.execute("CREATE OR REPLACE TEMP VIEW clients AS SELECT id, name FROM _clients")
    con.execute("CREATE OR REPLACE TEMP VIEW users AS SELECT id, name, email FROM _users")


def latency_percentiles_sql(histogram: str, quantiles: tuple[float, ...] = (0.5, 0.95)) -> str:
    """SQL for latency percentiles (ms, within 1%) over ``histogram``: any relation with
    ``latency_bucket`` and ``calls`` columns, such as a filtered ``ledger_latency_daily``."""
    picks = ", ".join(
        f"exp(min(latency_bucket) FILTER (WHERE running >= {float(q)!r} * total) * ln({LATENCY_GAMMA})) AS p{round(q * 100)}"
        for q in quantiles
    )
    return (f"SELECT {picks} FROM (SELECT latency_bucket, sum(n) OVER (ORDER BY latency_bucket) AS running, "
            f"sum(n) OVER () AS total FROM (SELECT latency_bucket, sum(calls) AS n FROM {histogram} GROUP BY 1))")
