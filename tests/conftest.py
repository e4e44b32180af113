"""Shared fixtures: a migrated database on SQLite and, when METERBOOK_TEST_POSTGRES_URL is set, PostgreSQL.

Every test that takes ``database`` runs once per backend. Each pytest-xdist worker gets
its own SQLite file and its own PostgreSQL schema, and tables are emptied between tests.
"""

from __future__ import annotations

import os
import sys
import tempfile

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from engine import db, migrate, router
from engine.config import get_settings
from engine.models import Base

POSTGRES_URL = os.environ.get("METERBOOK_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgresql"]

# Password hashing at production cost is the slowest thing in the suite; tests make many users.
os.environ.setdefault("METERBOOK_ARGON2_PROFILE", "test")
# Tests that store provider keys must never create or read the repository's own master key.
os.environ.setdefault("METERBOOK_SECRET_KEY_FILE", os.path.join(tempfile.mkdtemp(prefix="meterbook-test-keys-"), "secret.key"))


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def _engines(tmp_path_factory):
    engines = {}
    yield engines
    for engine in engines.values():
        engine.dispose()
    if "postgresql" in engines:
        admin = db.make_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {_schema()} CASCADE"))
        admin.dispose()


def _schema() -> str:
    # The pid too: two test runs at once (two people, or CI beside a developer) must not share tables.
    return f"mbtest_{_worker()}_{os.getpid()}"


def _engine_for(backend: str, engines: dict, tmp_path_factory):
    if backend in engines:
        return engines[backend]
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("db") / "meterbook.db"
        engine = db.make_engine(f"sqlite:///{path}")
    else:
        if not POSTGRES_URL:
            pytest.skip("set METERBOOK_TEST_POSTGRES_URL to run the PostgreSQL half")
        schema = _schema()
        admin = db.make_engine(POSTGRES_URL)
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            conn.execute(text(f"CREATE SCHEMA {schema}"))
        admin.dispose()
        url = make_url(db.normalize_url(POSTGRES_URL)).update_query_dict({"options": f"-csearch_path={schema}"})
        engine = db.make_engine(url.render_as_string(hide_password=False))
    migrate.upgrade(engine)
    engines[backend] = engine
    return engine


def empty_tables(engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture(params=BACKENDS)
def database(request, _engines, tmp_path_factory):
    """A migrated, empty database that the engine's services use for this test."""
    engine = _engine_for(request.param, _engines, tmp_path_factory)
    db.use_engine(engine)
    router.forget_routing()  # ids start again in each test: nothing remembered may carry over
    yield engine
    db.use_engine(None)
    empty_tables(engine)


@pytest.fixture
def sqlite_database(_engines, tmp_path_factory):
    """SQLite only: for page tests and anything backend-neutral that would just run twice."""
    engine = _engine_for("sqlite", _engines, tmp_path_factory)
    db.use_engine(engine)
    router.forget_routing()
    yield engine
    db.use_engine(None)
    empty_tables(engine)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """The app's data directory (warehouse, assets) in this test's temporary directory, with settings read afresh."""
    monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _close_mcp_sessions():
    """An MCP server a test's tool calls kept open does not outlive the test (its database is emptied)."""
    yield
    sessions = sys.modules.get("engine.connectors.sessions")  # loaded only by tests that call tools
    if sessions is not None:
        sessions.close_all()


@pytest.fixture
def settings_env(monkeypatch):
    """``settings_env(MCP_STDIO="catalog", STRIPE_SECRET_KEY=None)``: set (or, with None, unset)
    METERBOOK_* variables for this test; the settings are read again at once and after the test."""

    def apply(**values: str | None) -> None:
        for name, value in values.items():
            if value is None:
                monkeypatch.delenv(f"METERBOOK_{name}", raising=False)
            else:
                monkeypatch.setenv(f"METERBOOK_{name}", value)
        get_settings.cache_clear()

    yield apply
    monkeypatch.undo()
    get_settings.cache_clear()
