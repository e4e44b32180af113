"""Fill a ledger, export it to the warehouse and time the dashboard queries: ``--events``, ``--database``.

Steps, each timed: the demo workspace's ledger is generated (``engine.demo_ledger``) and written
in chunks of days, oldest first, so ids follow time as they do in production; ``warehouse.refresh``
exports it; each standard dashboard query (``analytics.queries``, the Cost & Usage page's own) runs
``--repeat`` times over a "last 30 days" view, and so does the same headline figures' query made
from the rollups alone (``totals_vs_previous_period_from_rollups``: latency percentiles from the
histogram, within 1%, over whole UTC days); the whole page's data (``engine.dashboards``:
connection, filter options, summary, first page of rows) is loaded cold (caches empty) and warm;
and one aggregate, spend per day and provider over the period, runs both on the system of record
and on the warehouse's ``ledger`` view (raw rows, not the rollup) for the speed-up.

``peak_rss_mb`` is the process's peak resident memory from the export on (generating the rows
is the bench's own work, not the warehouse's); ``peak_rss_mb_with_generation`` includes it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine import db, migrate
from engine.bench import scratch_database
from engine.config import get_settings

CHUNK_ROWS = 1_000_000  # rows generated at a time, to keep the generator's arrays small


def add_arguments(parser) -> None:
    parser.add_argument("--events", type=int, default=10_000_000, help="ledger rows to generate")
    parser.add_argument("--days", type=int, default=90, help="days of history they cover")
    parser.add_argument("--repeat", type=int, default=20, help="runs per query for p50/p95")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database", default=None, help="database URL (default: a fresh SQLite file)")


def run(args) -> dict:
    seed = args.seed or get_settings().demo_seed
    with scratch_database(args.database) as engine, tempfile.TemporaryDirectory(prefix="meterbook-wh-") as tmp:
        migrate.upgrade(engine)
        db.use_engine(engine)
        try:
            return _bench(engine, Path(tmp), events=args.events, days=args.days, repeat=args.repeat, seed=seed)
        finally:
            db.use_engine(None)


def _bench(engine, root: Path, *, events: int, days: int, repeat: int, seed: int) -> dict:
    from analytics import warehouse

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    actor = _fill(seed, now, days, events)
    generate_s = time.perf_counter() - started
    generation_peak = _peak_rss_mb()
    _reset_peak_rss()

    started = time.perf_counter()
    stats = warehouse.refresh(engine, root=root)
    export_s = time.perf_counter() - started

    queries = _standard_queries(actor, root, now, repeat)
    page_cold, page_warm = _page(actor, root, now)
    oltp_ms, warehouse_ms = _same_query(engine, actor, root, now)
    return {
        "bench": "analytics",
        "backend": engine.dialect.name,
        "events": events,
        "generate_s": round(generate_s, 1),
        "export_rows": stats.rows,
        "export_s": round(export_s, 2),
        "export_rows_per_s": round(stats.rows / export_s) if export_s else None,
        "warehouse_files": len(warehouse.read_manifest(root)["files"]),
        "warehouse_mb": round(sum(p.stat().st_size for p in root.rglob("*.parquet")) / 2**20, 1),
        "queries": queries,
        "page_cold_ms": page_cold,
        "page_warm_ms": page_warm,
        "oltp_same_query_ms": oltp_ms,
        "warehouse_same_query_ms": warehouse_ms,
        "speedup_vs_oltp": round(oltp_ms / warehouse_ms, 1) if warehouse_ms else None,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_mb_with_generation": max(generation_peak, _peak_rss_mb()),
    }


def _fill(seed: int, now: datetime, days: int, events: int):
    """The demo workspace with ``events`` ledger rows over ``days``, written a chunk of days at a time."""
    from engine import demo, demo_ledger
    from engine.permissions import Actor

    chunks = max(1, min(days, -(-events // CHUNK_ROWS)))
    bounds = [round(days * i / chunks) for i in range(chunks + 1)]
    rows = [events * (i + 1) // chunks - events * i // chunks for i in range(chunks)]
    first_end = now - timedelta(days=days - bounds[1])
    summary = demo.seed(seed=seed, days=bounds[1], rows=rows[0], now=first_end)
    for i in range(1, chunks):
        ledger = demo_ledger.generate(
            seed + i, now=now - timedelta(days=days - bounds[i + 1]), days=bounds[i + 1] - bounds[i], rows=rows[i],
            workspace_id=summary.workspace_id, timezone=demo.TIMEZONE, people=summary.user_ids,
            projects=summary.project_ids,
        )
        demo.insert_ledger(ledger)
        del ledger
    return Actor(summary.user_ids[0], summary.workspace_id)


def _filters(now: datetime):
    from analytics import queries
    from engine import demo

    return queries.Filters(queries.period("30d", demo.TIMEZONE, now))


def _standard_queries(actor, root: Path, now: datetime, repeat: int) -> dict:
    from analytics import queries, warehouse

    f = _filters(now)
    standard = {
        "spend_by_day_by_provider": lambda con: queries.spend_over_time(con, f, "provider"),
        "totals_vs_previous_period": lambda con: queries.totals(con, f),
        "top_projects": lambda con: queries.top(con, f, "project"),
        "top_users": lambda con: queries.top(con, f, "user"),
        "model_comparison": lambda con: queries.comparison(con, f, "model"),
        "cached_token_savings": lambda con: queries.cached_usage(con, f),
        # The headline figures again, percentiles included, from the rollups alone (whole UTC days).
        "totals_vs_previous_period_from_rollups": lambda con: _rollup_totals(con, now),
    }
    con = warehouse.connect(actor.workspace_id, root=root)
    out = {}
    try:
        for name, query in standard.items():
            query(con)  # the first run reads Parquet footers; the page's runs do too, see page_cold_ms
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                query(con)
                times.append((time.perf_counter() - started) * 1000)
            out[name] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(_p95(times), 1)}
    finally:
        con.close()
    return out


def _rollup_totals(con, now: datetime) -> dict:
    from analytics import warehouse

    end = now.astimezone(UTC).date()
    periods = {"current": (end - timedelta(days=30), end), "previous": (end - timedelta(days=60), end - timedelta(days=30))}
    out = {}
    for name, (lo, hi) in periods.items():
        spend, calls, tokens, errors = con.execute(
            "SELECT sum(cost), sum(calls), sum(input_tokens + output_tokens), sum(calls) FILTER (status <> 'ok') "
            "FROM ledger_daily WHERE day >= ? AND day < ?", [lo, hi]).fetchone()
        histogram = f"(SELECT * FROM ledger_latency_daily WHERE status = 'ok' AND day >= DATE '{lo}' AND day < DATE '{hi}')"
        p50, p95 = con.execute(warehouse.latency_percentiles_sql(histogram)).fetchone()
        out[name] = (spend, calls, tokens, errors / calls if calls else None, p50, p95)
    return out


def _p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20, method="inclusive")[-1] if len(times) > 1 else times[0]


def _page(actor, root: Path, now: datetime) -> tuple[float, float]:
    """Everything the Cost & Usage page loads for one view, with the warehouse caches empty, then warm."""
    from analytics import warehouse
    from engine import dashboards

    def load() -> float:
        started = time.perf_counter()
        with dashboards.open_dashboard(actor) as board:
            board.options()
            filters = board.filters(dashboards.View(period="30d"), now)
            board.summary(filters)
            board.rows(filters, 50)
        return (time.perf_counter() - started) * 1000

    warehouse.use_root(root)  # the page reads the default warehouse
    try:
        warehouse.clear_caches()
        cold = load()
        warehouse.wait_for_builds()  # warm: what the cold load left building in the background is built
        warm = statistics.median(load() for _ in range(5))
    finally:
        warehouse.use_root(None)
    return round(cold, 1), round(warm, 1)


def _same_query(engine, actor, root: Path, now: datetime) -> tuple[float, float]:
    """Spend per UTC day and provider over the period: on the system of record, then on the ledger view."""
    from analytics import warehouse

    f = _filters(now)
    start, end = f.period.start, f.period.end
    started = time.perf_counter()
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = ("SELECT substr(created_at, 1, 10) AS day, provider, sum(cost), count(*) FROM usage_ledger "
                   "WHERE workspace_id = ? AND created_at >= ? AND created_at < ? GROUP BY 1, 2 ORDER BY 1, 2")
            params = (actor.workspace_id, _sqlite_time(start), _sqlite_time(end))
        else:
            sql = ("SELECT (created_at AT TIME ZONE 'UTC')::date AS day, provider, sum(cost), count(*) "
                   "FROM usage_ledger WHERE workspace_id = %s AND created_at >= %s AND created_at < %s "
                   "GROUP BY 1, 2 ORDER BY 1, 2")
            params = (actor.workspace_id, start, end)
        oltp = conn.exec_driver_sql(sql, params).all()
    oltp_ms = (time.perf_counter() - started) * 1000

    con = warehouse.connect(actor.workspace_id, root=root)
    try:
        sql = ("SELECT CAST(created_at AS DATE) AS day, provider, sum(cost), count(*) FROM ledger "
               "WHERE created_at >= ? AND created_at < ? GROUP BY 1, 2 ORDER BY 1, 2")
        bounds = [start.astimezone(UTC).replace(tzinfo=None), end.astimezone(UTC).replace(tzinfo=None)]
        con.execute(sql, bounds).fetchall()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            answer = con.execute(sql, bounds).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        con.close()
    if [(str(d), p, n) for d, p, _, n in answer] != [(str(d), p, n) for d, p, _, n in oltp]:
        raise RuntimeError("the warehouse and the system of record disagree on the benchmark's aggregate")
    return round(oltp_ms, 1), round(statistics.median(times), 1)


def _sqlite_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets the kernel's peak-RSS mark (VmHWM) for this process.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
