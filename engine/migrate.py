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
        command.upgrade(cfg, "heads")
    return head()


def head() -> str:
    """The newest revision; while two lines of work have not been merged yet, both, joined by a comma."""
    return ",".join(sorted(ScriptDirectory.from_config(_config()).get_heads()))


def current(engine: Engine | None = None) -> str | None:
    engine = engine or db.get_engine()
    with engine.connect() as conn:
        return ",".join(sorted(MigrationContext.configure(conn).get_current_heads())) or None
