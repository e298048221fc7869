"""Alembic environment: migrates the connection passed in, or one made from the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.db.models import metadata

config = context.config

# Shared by `alembic check`, autogenerate and `protoevents.proxy.db.migrate.schema_diff`.
COMPARE_OPTIONS = {"compare_type": True, "compare_server_default": True}


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        **COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        **COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as own:
            run(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
