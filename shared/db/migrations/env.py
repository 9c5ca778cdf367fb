"""Alembic environment: runs against the connection handed over by shared.db.migrations (or the configured
engine), so migrations use the same URL/secret resolution as the functions."""

from __future__ import annotations

from alembic import context

from shared.db.engine import get_engine
from shared.db.models import Base

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    with get_engine().connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
