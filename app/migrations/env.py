"""Alembic environment: runs against the engine the application hands over (never a URL in an ini file)."""

from __future__ import annotations

from alembic import context

import app.models  # noqa: F401 - registers the application's tables on the shared metadata
from retrieval.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Migrate the database of the engine the caller handed over, in one transaction per run."""
    engine = config.attributes.get("engine")
    if engine is None:
        from sqlalchemy import create_engine

        url = config.get_main_option("sqlalchemy.url")
        if url is None:
            raise RuntimeError("alembic needs an engine (config.attributes['engine']) or a sqlalchemy.url")
        engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
