"""``python -m engine bench AREA``: time one area on a throwaway database; the CLI prints the result as JSON.

``demo-data`` seeds the demo workspace and times it, password hashing included. Where it runs:

* no ``--database``: a fresh SQLite file in a temporary directory, deleted afterwards;
* a PostgreSQL URL: a fresh schema in that database (created, migrated, dropped afterwards),
  so nothing already stored there is read or changed;
* a SQLite URL: that file, migrated; refused if it already holds the demo workspace.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from engine import db, migrate
from engine.config import get_settings

AREAS = ("demo-data",)


def run(area: str, args) -> dict:
    if area != "demo-data":
        raise ValueError(f"Unknown bench area {area!r}; choose one of {', '.join(AREAS)}.")
    seed = getattr(args, "seed", None) or get_settings().demo_seed
    return _demo_data(rows=args.rows, url=getattr(args, "database", None), seed=seed)


def _demo_data(*, rows: int, url: str | None, seed: int) -> dict:
    from engine import demo

    with _scratch_database(url) as engine:
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


@contextmanager
def _scratch_database(url: str | None) -> Iterator[Engine]:
    if url is None:
        with tempfile.TemporaryDirectory(prefix="meterbook-bench-") as tmp:
            engine = db.make_engine(f"sqlite:///{tmp}/bench.db")
            try:
                yield engine
            finally:
                engine.dispose()
        return
    if make_url(db.normalize_url(url)).get_backend_name() != "postgresql":
        engine = db.make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    schema = f"meterbook_bench_{os.getpid()}_{secrets.token_hex(3)}"
    admin = db.make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    scoped = make_url(db.normalize_url(url)).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = db.make_engine(scoped.render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
