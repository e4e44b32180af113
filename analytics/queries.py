"""The Cost & Usage page's questions, asked of a workspace's warehouse connection.

Every function takes a DuckDB connection (``analytics.warehouse.connect``, already scoped
to one workspace) and a ``Filters``, and returns a small dataclass or a Polars frame. Money
stays ``DECIMAL``/``Decimal`` from the ledger to the frame; the only floats are ratios and
latencies. Values from the user always travel as bound parameters, never in the SQL text.

Periods are calendar periods in the workspace's timezone (``analytics.periods``, re-exported
here). The ledger keeps UTC instants, so charts bucket by local day (or hour) through the
workspace's UTC offsets, computed exactly, DST changes included.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import duckdb
import polars as pl

from analytics.periods import PERIODS, Period, local_midnight, offset_changes, period  # noqa: F401  (re-exported)
from analytics.views import LATENCY_BUCKET_SQL, LATENCY_COARSE, LATENCY_GAMMA

UNASSIGNED = -1  # as a project or user filter: calls charged to no project, or made with an API key by no one
TOP_DIMENSIONS = ("project", "user", "tag", "workflow_run")
StackBy = Literal["provider", "model"]


def _utc(instant: datetime) -> datetime:
    """The naive UTC timestamp the warehouse's ``created_at`` is compared with."""
    return instant.astimezone(UTC).replace(tzinfo=None)


# --- filters --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """What the page is looking at: a period and any of the ledger's dimensions (None = all)."""

    period: Period
    client_id: int | None = None
    project_id: int | None = None  # or UNASSIGNED
    provider: str | None = None
    model: str | None = None
    user_id: int | None = None  # or UNASSIGNED
    kind: str | None = None
    tag: str | None = None
    status: str | None = None
    workflow_run_id: int | None = None  # drill-down only, as is:
    cached: bool = False  # only calls that read or wrote a prompt cache

    def within(self, start: datetime, end: datetime) -> Filters:
        """The same filters over part of the period (a chart's bar); no previous period to compare."""
        start, end = max(start, self.period.start), min(end, self.period.end)
        return replace(self, period=replace(self.period, start=start, end=max(start, end),
                                            previous_start=start, previous_end=start))


class _Params:
    """Collects bound parameters under generated names, so SQL text never holds a user's value."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


def _frame(con: duckdb.DuckDBPyConnection, sql: str, p: _Params) -> pl.DataFrame:
    return con.sql(sql, params=p.values).pl()


def _dimensions(f: Filters, p: _Params) -> list[str]:
    where = []
    if f.client_id is not None:
        where.append(f"project_id IN (SELECT id FROM projects WHERE client_id = {p(f.client_id)})")
    for column in ("project_id", "user_id"):
        value = getattr(f, column)
        if value == UNASSIGNED:
            where.append(f"{column} IS NULL")
        elif value is not None:
            where.append(f"{column} = {p(value)}")
    for column in ("provider", "model", "kind", "status", "workflow_run_id"):
        value = getattr(f, column)
        if value is not None:
            where.append(f"{column} = {p(value)}")
    if f.tag is not None:
        where.append(f"list_contains(tags, {p(f.tag)})")
    if f.cached:
        where.append("(cached_input_tokens > 0 OR cache_write_tokens > 0)")
    return where


def _where(f: Filters, p: _Params, start: datetime | None = None, end: datetime | None = None,
           column: str = "created_at") -> str:
    """``column`` in ``[start, end)`` (the period by default) and the filters' dimensions.

    On ``created_at`` the rows are the ledger's, and the condition is for ``ledger_by_month``.
    """
    start = f.period.start if start is None else start
    end = f.period.end if end is None else end
    bounds = [f"{column} >= {p(_utc(start))}", f"{column} < {p(_utc(end))}"]
    if column == "created_at":  # ledger rows, read from ``ledger_by_month``: open only these months' files
        bounds += [f"month >= {p(f'{start.astimezone(UTC):%Y-%m}')}", f"month <= {p(f'{end.astimezone(UTC):%Y-%m}')}"]
    return " AND ".join([*bounds, *_dimensions(f, p)])


# Most questions are sums, which the warehouse keeps per UTC hour and dimension key
# (``ledger_hourly``): the period's whole hours are read from there, and only its ragged
# edges (the hour now is in) from the ledger itself.
FACT_KEYS = ("provider", "model", "project_id", "user_id", "kind", "status", "tags")
FACT_SUMS = {"calls": "BIGINT", "cost": "DECIMAL(38, 10)", "input_tokens": "BIGINT", "output_tokens": "BIGINT",
             "cached_input_tokens": "BIGINT", "cache_write_tokens": "BIGINT", "priced_calls": "BIGINT"}
# Each FACT_SUMS column as one ledger row contributes it, and as the hourly rollup holds it.
RAW_FACTS = {"calls": "1", "priced_calls": "coalesce(priced, true)::INT"}
HOURLY_FACTS = {"priced_calls": "coalesce(priced_calls, calls)"}  # files older than ``priced``: all were priced
HOUR = timedelta(hours=1)


def _hours_are_local(f: Filters) -> bool:
    """Whether every UTC hour of the period lies inside one local hour (no half-hour offsets)."""
    changes = offset_changes(f.period.tz, f.period.start, f.period.end)
    whole_offsets = all(offset % 3600 == 0 for _, offset in changes)
    return whole_offsets and all(at.minute == at.second == 0 for at, _ in changes[1:])


def _facts(f: Filters, p: _Params, start: datetime | None = None, end: datetime | None = None,
           hourly: bool = True) -> str:
    """The calls in ``[start, end)`` (the period by default) as a subquery of (ts, FACT_KEYS, FACT_SUMS) rows.

    ``ts`` is the hour of a rollup row or the instant of a ledger row (both UTC). Aggregate the
    subquery to answer: a key can have several rows (an hour's rollup and the ragged edges).
    ``hourly=False`` reads only ledger rows, for questions finer than an hour.
    """
    start = f.period.start if start is None else start
    end = f.period.end if end is None else end
    keys = ", ".join(FACT_KEYS)
    raw_sums = ", ".join(f"({RAW_FACTS.get(c, c)})::{t} AS {c}" for c, t in FACT_SUMS.items())
    hourly_sums = ", ".join(f"({HOURLY_FACTS.get(c, c)})::{t} AS {c}" for c, t in FACT_SUMS.items())

    def raw(lo: datetime, hi: datetime) -> str:
        return f"SELECT created_at AS ts, {keys}, {raw_sums} FROM ledger_by_month WHERE {_where(f, p, lo, hi)}"

    first_hour = start.replace(minute=0, second=0, microsecond=0)
    first_hour += HOUR if first_hour < start else timedelta(0)
    last_hour = end.replace(minute=0, second=0, microsecond=0)
    # A run, or using a cache, is not a rollup key: those filters need the ledger's rows.
    if not hourly or f.workflow_run_id is not None or f.cached or first_hour >= last_hour:
        return f"({raw(start, end)})"
    parts = [f"SELECT hour AS ts, {keys}, {hourly_sums} FROM ledger_hourly "
             f"WHERE {_where(f, p, first_hour, last_hour, 'hour')}"]
    if start < first_hour:
        parts.append(raw(start, first_hour))
    if last_hour < end:
        parts.append(raw(last_hour, end))
    return "(" + " UNION ALL ".join(parts) + ")"


DAY = timedelta(days=1)


def _latency(f: Filters, p: _Params, keys: str = "", start: datetime | None = None,
             end: datetime | None = None) -> str:
    """Successful calls in ``[start, end)`` as a (``keys``, latency_bucket, calls) histogram subquery.

    Whole UTC days come from the warehouse's daily latency histogram, the ragged edges from
    ledger rows bucketed the same way, so percentiles read from it are within 1% of exact.
    """
    start = f.period.start if start is None else start
    end = f.period.end if end is None else end
    cols = f"{keys}, " if keys else ""

    def raw(lo: datetime, hi: datetime) -> str:
        return (f"SELECT {cols}{LATENCY_BUCKET_SQL} AS latency_bucket, 1 AS calls FROM ledger_by_month "
                f"WHERE {_where(f, p, lo, hi)} AND status = 'ok' AND latency_ms IS NOT NULL")

    first_day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day += DAY if first_day < start else timedelta(0)
    last_day = end.replace(hour=0, minute=0, second=0, microsecond=0)
    if f.workflow_run_id is not None or f.cached or first_day >= last_day:
        return f"({raw(start, end)})"
    parts = [f"SELECT {cols}latency_bucket, calls FROM {_latency_source(f, keys)} "
             f"WHERE {_where(f, p, first_day, last_day, 'day')} AND status = 'ok'"]
    if start < first_day:
        parts.append(raw(start, first_day))
    if last_day < end:
        parts.append(raw(last_day, end))
    return "(" + " UNION ALL ".join(parts) + ")"


def _latency_source(f: Filters, keys: str) -> str:
    """The smallest daily latency histogram that holds ``keys`` and every key the filters name."""
    needed = {k.strip() for k in keys.split(",") if k.strip()} | {"status"}
    for column in ("client_id", "project_id", "user_id", "kind", "tag"):
        if getattr(f, column) is not None:
            return "ledger_latency_daily"
    needed |= {c for c in ("provider", "model") if getattr(f, c) is not None}
    for name, have in LATENCY_COARSE.items():
        if needed <= set(have):
            return f"ledger_{name}"
    return "ledger_latency_daily"


def _percentiles(histogram: str, keys: str = "") -> str:
    """p50_ms and p95_ms (nearest rank, within 1%) per ``keys`` over a ``_latency`` histogram."""
    by = f"PARTITION BY {keys} " if keys else ""
    group = f"{keys}, " if keys else ""

    def pick(q: float) -> str:
        return (f"exp(min(latency_bucket) FILTER (WHERE running >= {q} * total) * ln({LATENCY_GAMMA})) "
                f"AS p{round(q * 100)}_ms")

    return (f"SELECT {group}{pick(0.5)}, {pick(0.95)} FROM ("
            f"SELECT *, sum(n) OVER ({by}ORDER BY latency_bucket) AS running, sum(n) OVER ({by.strip()}) AS total "
            f"FROM (SELECT {group}latency_bucket, sum(calls) AS n FROM {histogram} GROUP BY ALL))"
            + (f" GROUP BY {keys}" if keys else ""))


def _local(f: Filters, p: _Params, column: str) -> str:
    """``column`` (a UTC timestamp) on the workspace's wall clock, as an SQL expression valid within the period."""
    changes = offset_changes(f.period.tz, f.period.start, f.period.end)
    if len(changes) == 1:
        return f"{column} + to_seconds({p(changes[0][1])})"
    cases = " ".join(f"WHEN {column} < {p(_utc(at))} THEN {p(before)}"
                     for (at, _), (_, before) in zip(changes[1:], changes[:-1]))
    return f"{column} + to_seconds(CASE {cases} ELSE {p(changes[-1][1])} END)"


# --- the headline figures -------------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    spend: Decimal
    calls: int
    tokens: int
    errors: int  # calls whose status is not "ok"
    unpriced: int  # calls of a model without a known price: their cost is not in ``spend``
    p50_ms: float | None  # latency of successful calls, nearest rank, within 1%
    p95_ms: float | None

    @property
    def cost_per_call(self) -> Decimal | None:
        return self.spend / self.calls if self.calls else None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.calls if self.calls else None


@dataclass(frozen=True)
class Comparison:
    current: Totals
    previous: Totals


def totals(con: duckdb.DuckDBPyConnection, f: Filters) -> Comparison:
    """The period's headline figures and the previous period's."""
    p = _Params()
    per = f.period
    sums = (f"SELECT current, coalesce(sum(cost), 0)::DECIMAL(38, 10), sum(calls)::BIGINT, "
            f"sum(input_tokens + output_tokens)::BIGINT, sum(calls) FILTER (status <> 'ok')::BIGINT, "
            f"sum(calls - priced_calls)::BIGINT FROM ("
            f"SELECT true AS current, * FROM {_facts(f, p)} UNION ALL "
            f"SELECT false, * FROM {_facts(f, p, per.previous_start, per.previous_end)}) GROUP BY current")
    figures = {current: rest for current, *rest in con.sql(sums, params=p.values).fetchall()}
    p = _Params()
    histogram = (f"(SELECT true AS current, * FROM {_latency(f, p)} UNION ALL "
                 f"SELECT false, * FROM {_latency(f, p, start=per.previous_start, end=per.previous_end)})")
    percentiles = {current: (p50, p95) for current, p50, p95
                   in con.sql(_percentiles(histogram, "current"), params=p.values).fetchall()}

    def unpack(current: bool) -> Totals:
        spend, calls, tokens, errors, unpriced = figures.get(current) or (Decimal(0), 0, 0, 0, 0)
        p50, p95 = percentiles.get(current) or (None, None)
        return Totals(spend, calls or 0, tokens or 0, errors or 0, unpriced or 0, p50, p95)

    return Comparison(unpack(True), unpack(False))


# --- charts ---------------------------------------------------------------------------------


def _keys(by: StackBy) -> str:
    if by not in ("provider", "model"):
        raise ValueError(f"Group by provider or model, not {by!r}.")
    return "provider" if by == "provider" else "provider, model"


def spend_over_time(con: duckdb.DuckDBPyConnection, f: Filters, by: StackBy = "provider") -> pl.DataFrame:
    """Spend and calls per local day (per local hour for a one-day period), split by provider or model.

    Columns: bucket (local wall-clock datetime), provider[, model], spend, calls.
    """
    p = _Params()
    keys = _keys(by)
    return _frame(con, (
        f"SELECT date_trunc({p(f.period.grain)}, {_local(f, p, 'ts')}) AS bucket, {keys}, "
        f"coalesce(sum(cost), 0)::DECIMAL(38, 10) AS spend, sum(calls)::BIGINT AS calls "
        f"FROM {_facts(f, p, hourly=_hours_are_local(f))} GROUP BY ALL ORDER BY bucket, {keys}"
    ), p)


def bucket_bounds(f: Filters, bucket: datetime) -> tuple[datetime, datetime]:
    """The UTC bounds of one chart bucket (a local day or hour), for drilling into it."""
    zone = ZoneInfo(f.period.tz)
    if f.period.grain == "day":
        day = bucket.date()
        return local_midnight(day, f.period.tz), local_midnight(day + timedelta(days=1), f.period.tz)
    # fold=0 at both ends: a repeated hour (DST ending) covers both of its occurrences.
    start = bucket.replace(minute=0, second=0, microsecond=0, tzinfo=zone)
    return start.astimezone(UTC), (start.replace(tzinfo=None) + HOUR).replace(tzinfo=zone).astimezone(UTC)


def comparison(con: duckdb.DuckDBPyConnection, f: Filters, by: StackBy = "provider") -> pl.DataFrame:
    """Providers (or models) side by side, biggest spend first.

    Columns: provider[, model], calls, tokens, spend, cost_per_1k_tokens (exact; null without
    tokens), error_rate, unpriced, p50_ms, p95_ms (successful calls; as ``Totals``).
    """
    p = _Params()
    keys = _keys(by)
    frame = _frame(con, (
        f"SELECT {keys}, sum(calls)::BIGINT AS calls, sum(input_tokens + output_tokens)::BIGINT AS tokens, "
        f"coalesce(sum(cost), 0)::DECIMAL(38, 10) AS spend, "
        f"coalesce(sum(calls) FILTER (status <> 'ok'), 0) / sum(calls) AS error_rate, "
        f"sum(calls - priced_calls)::BIGINT AS unpriced "
        f"FROM {_facts(f, p)} GROUP BY ALL ORDER BY spend DESC, {keys}"
    ), p)
    p = _Params()
    latency = _frame(con, _percentiles(_latency(f, p, keys), keys), p)
    per_1k = [_per_1k(s, t) for s, t in zip(frame["spend"].to_list(), frame["tokens"].to_list())]
    frame = frame.insert_column(frame.columns.index("spend") + 1,
                                pl.Series("cost_per_1k_tokens", per_1k, dtype=pl.Decimal(38, 10)))
    return frame.join(latency, on=[k.strip() for k in keys.split(",")], how="left", maintain_order="left")


def _per_1k(spend: Decimal, tokens: int) -> Decimal | None:
    return (spend * 1000 / tokens).quantize(Decimal("1e-10")) if tokens else None


def top(con: duckdb.DuckDBPyConnection, f: Filters, dimension: str, limit: int = 10) -> pl.DataFrame:
    """The ``limit`` biggest spenders along one of ``TOP_DIMENSIONS``. Columns: key, label, spend, calls.

    Calls charged to no project, or made by no user, appear under the key ``UNASSIGNED``; calls
    from no workflow run are left out; a call with several tags counts under each of them.
    """
    p = _Params()
    if dimension == "workflow_run":  # not a rollup key: read the ledger, skipping the many rows without a run
        source = (f"(SELECT workflow_run_id AS key, cost, 1 AS calls FROM ledger_by_month "
                  f"WHERE {_where(f, p)} AND workflow_run_id IS NOT NULL)")
    elif dimension in ("project", "user"):
        source = f"(SELECT coalesce({dimension}_id, {UNASSIGNED}) AS key, cost, calls FROM {_facts(f, p)})"
    elif dimension == "tag":
        source = f"(SELECT unnest(tags) AS key, cost, calls FROM {_facts(f, p)})"
    else:
        raise ValueError(f"Unknown dimension {dimension!r}; choose one of {', '.join(TOP_DIMENSIONS)}.")
    label = {
        "project": f"CASE WHEN key = {UNASSIGNED} THEN 'Not charged to a project' "
                   "ELSE coalesce((SELECT name FROM projects WHERE id = key), 'Project #' || key) END",
        "user": f"CASE WHEN key = {UNASSIGNED} THEN 'No user (API key)' "
                "ELSE coalesce((SELECT name FROM users WHERE id = key), 'User #' || key) END",
        "tag": "key",
        "workflow_run": "'Run #' || key",
    }[dimension]
    return _frame(con, (
        f"WITH t AS (SELECT key, coalesce(sum(cost), 0)::DECIMAL(38, 10) AS spend, sum(calls)::BIGINT AS calls "
        f"FROM {source} GROUP BY key ORDER BY spend DESC, key LIMIT {p(limit)}) "
        f"SELECT key, {label} AS label, spend, calls FROM t ORDER BY spend DESC, key"
    ), p)


def cached_usage(con: duckdb.DuckDBPyConnection, f: Filters) -> pl.DataFrame:
    """Cache reads and writes per provider, model and UTC hour, for pricing what caching saved.

    Columns: provider, model, hour (naive UTC), cached_input_tokens, cache_write_tokens, calls.
    """
    p = _Params()
    return _frame(con, (
        f"SELECT provider, model, date_trunc('hour', ts) AS hour, "
        f"sum(cached_input_tokens)::BIGINT AS cached_input_tokens, sum(cache_write_tokens)::BIGINT AS cache_write_tokens, "
        f"sum(calls)::BIGINT AS calls FROM {_facts(f, p)} "
        f"WHERE cached_input_tokens > 0 OR cache_write_tokens > 0 GROUP BY ALL ORDER BY ALL"
    ), p)


def cached_usage_within(con: duckdb.DuckDBPyConnection, f: Filters, hours: list[datetime], models: list[str],
                        price_changes: list[datetime]) -> pl.DataFrame:
    """``cached_usage`` of ``models`` in the given UTC hours, split wherever a price can change inside one.

    Catalog prices change on the half hour at most (DeepSeek's off-peak hours begin at 16:30 UTC)
    and a workspace's price override at its ``price_changes``; every row of a group here shares
    one price. Columns as ``cached_usage``, with ``priced_at`` (a call of the group) for ``hour``.
    """
    p = _Params()
    regime = f", len(list_filter({p([_utc(c) for c in price_changes])}::TIMESTAMP[], lambda c: c <= created_at))" \
        if price_changes else ""
    return _frame(con, (
        f"SELECT provider, model, min(created_at) AS priced_at, "
        f"sum(cached_input_tokens)::BIGINT AS cached_input_tokens, sum(cache_write_tokens)::BIGINT AS cache_write_tokens, "
        f"count(*) AS calls FROM ledger_by_month "
        f"WHERE {_where(f, p)} AND (cached_input_tokens > 0 OR cache_write_tokens > 0) "
        f"AND list_contains({p(list(models))}::VARCHAR[], model) "
        f"AND list_contains({p([_utc(h) for h in hours])}::TIMESTAMP[], date_trunc('hour', created_at)) "
        f"GROUP BY provider, model, time_bucket(INTERVAL 30 MINUTE, created_at){regime} ORDER BY ALL"
    ), p)


# --- the rows behind a figure ---------------------------------------------------------------

ROW_COLUMNS = (
    "id", "created_at", "user", "project", "client", "provider", "model", "kind", "input_tokens",
    "cached_input_tokens", "cache_write_tokens", "output_tokens", "images", "characters", "seconds",
    "cost", "estimated_cost", "latency_ms", "ttft_ms", "status", "error", "tags", "workflow_run_id",
    "notebook_id", "report_id",
)


@dataclass(frozen=True)
class Rows:
    frame: pl.DataFrame  # ROW_COLUMNS, newest first; created_at in the workspace's timezone
    total: int  # how many rows match, of which ``frame`` holds a page


def count_rows(con: duckdb.DuckDBPyConnection, f: Filters) -> int:
    p = _Params()
    [(n,)] = con.sql(f"SELECT coalesce(sum(calls), 0)::BIGINT FROM {_facts(f, p)}", params=p.values).fetchall()
    return n


def _newest_hours_start(con: duckdb.DuckDBPyConnection, f: Filters, needed: int) -> datetime | None:
    """The latest UTC hour from which the period's newest ``needed`` rows all lie, read from the rollup.

    Only the period's whole hours are counted, so the rows from that hour on are at least as many
    as counted, and any row before it is older than all of them: a newest-first page needs none of
    the older rows. None when the rollup cannot tell (too few rows, or a filter it does not hold).
    """
    start, end = f.period.start, f.period.end
    first_hour = start.replace(minute=0, second=0, microsecond=0)
    first_hour += HOUR if first_hour < start else timedelta(0)
    last_hour = end.replace(minute=0, second=0, microsecond=0)
    if f.workflow_run_id is not None or f.cached or first_hour >= last_hour or needed <= 0:
        return None
    p = _Params()
    found = con.sql(
        f"SELECT hour FROM (SELECT hour, sum(sum(calls)) OVER (ORDER BY hour DESC) AS newer FROM ledger_hourly "
        f"WHERE {_where(f, p, first_hour, last_hour, 'hour')} GROUP BY hour) "
        f"WHERE newer >= {p(needed)} ORDER BY hour DESC LIMIT 1", params=p.values).fetchall()
    return found[0][0].replace(tzinfo=UTC) if found else None


def rows(con: duckdb.DuckDBPyConnection, f: Filters, limit: int, offset: int = 0) -> Rows:
    """Ledger rows matching ``f``, newest first, with people's, projects' and clients' names."""
    p = _Params()
    columns = ", ".join(
        {"user": "u.name AS user", "project": "pr.name AS project", "client": "c.name AS client"}.get(c, f"l.{c}")
        for c in ROW_COLUMNS
    )
    # Read only the hours that hold the page: at ten million rows, sorting a month to show fifty is most of the work.
    start = _newest_hours_start(con, f, limit + offset) or f.period.start
    frame = _frame(con, (
        f"SELECT {columns} FROM (SELECT * EXCLUDE (month) FROM ledger_by_month WHERE {_where(f, p, start=max(start, f.period.start))} "
        f"ORDER BY created_at DESC, id DESC LIMIT {p(limit)} OFFSET {p(offset)}) l "
        f"LEFT JOIN users u ON u.id = l.user_id LEFT JOIN projects pr ON pr.id = l.project_id "
        f"LEFT JOIN clients c ON c.id = pr.client_id ORDER BY l.created_at DESC, l.id DESC"
    ), p)
    frame = frame.with_columns(pl.col("created_at").dt.replace_time_zone("UTC").dt.convert_time_zone(f.period.tz))
    return Rows(frame, count_rows(con, f))


# --- what the filters can choose from -------------------------------------------------------


@dataclass(frozen=True)
class Options:
    clients: dict[int, str]
    projects: dict[int, str]  # archived ones too: their history still counts
    users: dict[int, str]  # names; with the email where two people share one
    providers: list[str]
    models: list[str]
    kinds: list[str]
    tags: list[str]
    statuses: list[str]
    has_usage: bool


def options(con: duckdb.DuckDBPyConnection) -> Options:
    """Every value a filter can take in this workspace, in display order (read from the daily rollup)."""

    def pairs(sql: str) -> dict[int, str]:
        return dict(con.sql(sql).fetchall())

    people = con.sql(
        "SELECT id, name, email, count(*) OVER (PARTITION BY name) > 1 FROM users ORDER BY name, id"
    ).fetchall()

    def distinct(sql: str) -> list[str]:
        return [v for (v,) in con.sql(sql).fetchall() if v is not None]

    providers = distinct("SELECT DISTINCT provider FROM ledger_daily ORDER BY 1")
    return Options(
        clients=pairs("SELECT id, name FROM clients ORDER BY name, id"),
        projects=pairs("SELECT id, name FROM projects ORDER BY archived, name, id"),
        users={i: f"{name} ({email})" if shared else name for i, name, email, shared in people},
        providers=providers,
        models=distinct("SELECT DISTINCT model FROM ledger_daily ORDER BY 1"),
        kinds=distinct("SELECT DISTINCT kind FROM ledger_daily ORDER BY 1"),
        tags=distinct("SELECT DISTINCT unnest(tags) FROM ledger_daily ORDER BY 1"),
        statuses=distinct("SELECT DISTINCT status FROM ledger_daily ORDER BY status <> 'ok', 1"),
        has_usage=bool(providers),
    )
