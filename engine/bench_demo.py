"""Seed the demo workspace (password hashing included) and time it: ``--rows``, ``--database``."""

from __future__ import annotations

import time

from engine import db, migrate
from engine.bench import scratch_database
from engine.config import get_settings


def add_arguments(parser) -> None:
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--database", default=None, help="database URL (default: a fresh SQLite file)")


def run(args) -> dict:
    seed = args.seed or get_settings().demo_seed
    return _demo_data(rows=args.rows, url=args.database, seed=seed)


def _demo_data(*, rows: int, url: str | None, seed: int) -> dict:
    from engine import demo

    with scratch_database(url) as engine:
        migrate.upgrade(engine)
        db.use_engine(engine)
        try:
            started = time.perf_counter()
            summary = demo.seed(seed=seed, rows=rows)
            seconds = time.perf_counter() - started
        finally:
            db.use_engine(None)
    return {
        "area": "demo-data",
        "backend": engine.dialect.name,
        "rows": summary.rows,
        "seconds": round(seconds, 3),
        "rows_per_second": round(summary.rows / seconds) if seconds else None,
        "total_cost": format(summary.total_cost, "f"),
    }


