"""Apply Alembic migrations: ``python -m engine init``. Safe to run any number of times."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from engine import db

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine | None = None) -> str:
    """Bring the schema to the newest revision and return it."""
    engine = engine or db.get_engine()
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head()


def head() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head()


def current(engine: Engine | None = None) -> str | None:
    engine = engine or db.get_engine()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
