"""Alembic environment: migrates the database the settings (or the caller) point at."""

from alembic import context

from engine import db
from engine.models import Base

config = context.config
connection = config.attributes.get("connection")


def run(conn) -> None:
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    with db.get_engine().connect() as conn:
        run(conn)
        conn.commit()
