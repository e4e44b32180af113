"""``python -m engine bench AREA``: each area times one part of Meterbook and returns a dict the CLI prints as JSON.

An area is a module with ``add_arguments(parser)`` and ``run(args) -> dict``; heavy imports stay
inside ``run`` so that ``--help`` is instant. ``scratch_database`` gives an area a database it
may fill and throw away:

* no URL: a fresh SQLite file in a temporary directory, deleted afterwards;
* a PostgreSQL URL: a fresh schema in that database (created, migrated, dropped afterwards),
  so nothing already stored there is read or changed;
* a SQLite URL: that file, as it is.
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from engine import db

AREAS = {
    "demo-data": "engine.bench_demo",
    "analytics": "engine.bench_analytics",
    "router": "engine.bench_router",
    "budgets": "engine.bench_budgets",
    "workflows": "engine.bench_workflows",
    "billing": "engine.bench_billing",
    "scheduler": "engine.bench_scheduler",
    "connectors": "engine.bench_connectors",
}


def add_parsers(bench: argparse.ArgumentParser) -> None:
    areas = bench.add_subparsers(dest="area", required=True)
    for name, module in AREAS.items():
        mod = importlib.import_module(module)
        area = areas.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0])
        mod.add_arguments(area)
        area.set_defaults(bench_module=module)


def run(args) -> dict:
    return importlib.import_module(args.bench_module).run(args)


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as ``saved`` had them (None: it was unset)."""
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def scratch_database(url: str | None) -> Iterator[Engine]:
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
