"""Engines for the event database (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from protoevents.proxy.db import DEFAULT_URL
from protoevents.proxy.db.models import event_types
from protoevents.recorder.registry import Registry

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(url: str | sa.URL = DEFAULT_URL, **kwargs: Any) -> Engine:
    """An engine for `url`, tuned for the backend.

    SQLite: WAL journal (readers never block the writer), synchronous=NORMAL (durable at
    each checkpoint; the proxy's own write-ahead log covers the rest), a busy timeout so
    concurrent readers and writers wait instead of failing. PostgreSQL (psycopg 3): sessions
    in UTC, a small pool checked before use.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(parsed, **kwargs)
        sa_event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        options: dict[str, Any] = {
            "pool_size": 5,
            "max_overflow": 5,
            "pool_pre_ping": True,
            "connect_args": {"options": "-c timezone=UTC"},
        }
        options.update(kwargs)
        return sa.create_engine(parsed, **options)
    return sa.create_engine(parsed, **kwargs)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


# The dialects whose INSERT takes ON CONFLICT DO UPDATE, with the same API in SQLAlchemy.
_INSERT_OF_DIALECT: dict[str, Callable[[sa.Table], postgresql.Insert | sqlite.Insert]] = {
    "postgresql": postgresql.insert,
    "sqlite": sqlite.insert,
}


def upsert(connection: Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Insert `rows` into `table`, overwriting the non-key columns of existing rows."""
    if not rows:
        return
    dialect = connection.dialect.name
    insert = _INSERT_OF_DIALECT.get(dialect)
    if insert is None:
        raise NotImplementedError(f"no upsert for the {dialect} dialect")
    statement = insert(table)
    keys = [c.name for c in table.primary_key.columns]
    excluded = statement.excluded
    changed = {c.name: excluded[c.name] for c in table.columns if not c.primary_key}
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed), rows)


def sync_event_types(engine: Engine, registry: Registry) -> int:
    """Upsert every type of `registry` into `event_types`; returns how many it holds.

    Types no longer in the registry are kept: stored events may still name them.
    """
    rows = [
        {
            "name": t.name,
            "number": t.number,
            "severity": t.severity,
            "category": t.category,
            "description": t.description,
            "service": t.service,
            "enum_name": t.enum_name,
        }
        for t in registry
    ]
    with engine.begin() as connection:
        upsert(connection, event_types, rows)
    return len(rows)
