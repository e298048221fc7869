"""The SQL writer (kind `sql`): stores new events and applies dedup updates, idempotently,
per batch."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine

from protoevents.proxy.changes import UPDATED, Change, PermanentWriteError, merge_repeats
from protoevents.proxy.db.models import events
from protoevents.proxy.db.rows import (
    COLUMNS,
    COPY_COLUMNS,
    event_to_copy_line,
    event_to_sqlite_values,
    timestamp_to_text,
)
from protoevents.proxy.writers.base import BuildContext, WriterOptions
from protoevents.v1 import event_pb2

# PostgreSQL staging tables: temporary (no WAL), one per session, emptied at each commit.
_STAGE = "protoevents_events_stage"
_UPDATE_STAGE = "protoevents_updates_stage"
_COLUMN_LIST = ", ".join(f'"{name}"' for name in COPY_COLUMNS)
_SAVEPOINT = "protoevents_copy"
_CHUNK = 250  # COPY lines per write: the server parses a chunk while the next is made


def _create_stage(table: str) -> str:
    return f"CREATE TEMP TABLE IF NOT EXISTS {table} (LIKE events) ON COMMIT DELETE ROWS"


_INSERT_FROM_STAGE = (
    f"INSERT INTO events ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_STAGE} "
    "ON CONFLICT (id) DO NOTHING"
)
# xmax = 0 tells a row this statement inserted from one it updated.
_UPSERT_FROM_STAGE = (
    f"INSERT INTO events AS e ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM {_UPDATE_STAGE} "
    "ON CONFLICT (id) DO UPDATE SET count = GREATEST(e.count, excluded.count), "
    "last_time = GREATEST(e.last_time, excluded.last_time) "
    "WHERE excluded.count > e.count OR excluded.last_time > e.last_time "
    "RETURNING e.xmax = 0"
)


@dataclass(frozen=True, slots=True)
class SqlOptions(WriterOptions):
    """The SQL writer stores into the proxy's database (the `db` setting): no options."""

    uses_database: ClassVar[bool] = True


Options = SqlOptions


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch changed: rows inserted (replays are not) and rows whose count or
    last time an update raised."""

    inserted: int
    updated: int


@dataclass(slots=True)
class _Plan:
    """A batch reduced to one new event per id and one update per id (`merge_repeats`)."""

    created: dict[str, event_pb2.Event]
    updates: dict[str, event_pb2.Event]


def _plan(changes: Sequence[Change]) -> _Plan:
    created: dict[str, event_pb2.Event] = {}
    updates: dict[str, event_pb2.Event] = {}
    for change in merge_repeats(changes):
        event = change.event
        (updates if change.kind == UPDATED else created)[event.id] = event
    return _Plan(created, updates)


def write_changes(connection: Connection, changes: Sequence[Change]) -> WriteResult:
    """Apply a batch of changes inside the caller's transaction.

    CREATED inserts the event unless its id is stored (a replay); UPDATED raises the stored
    `count` and `last_time` to the update's when higher (inserting the event first if it is
    missing). Applying the same batch twice, or its updates in any order, leaves the same rows.
    """
    plan = _plan(changes)
    if not plan.created and not plan.updates:
        return WriteResult(0, 0)
    if connection.dialect.name == "postgresql":
        return _write_postgresql(connection, plan)
    if connection.dialect.name == "sqlite":
        return _write_sqlite(connection, plan)
    raise NotImplementedError(f"no SQL writer for the {connection.dialect.name} dialect")


def _write_sqlite(connection: Connection, plan: _Plan) -> WriteResult:
    """SQLite: executemany of the compiled Core insert (ON CONFLICT DO NOTHING) with rows
    already in SQLite's storage form, then one executemany of the merged updates."""
    rows = [event_to_sqlite_values(event) for event in plan.created.values()]
    rows.extend(
        event_to_sqlite_values(update)
        for event_id, update in plan.updates.items()
        if event_id not in plan.created
    )
    inserted = connection.exec_driver_sql(_sqlite_insert_sql(connection.dialect), rows).rowcount
    updated = 0
    if plan.updates:
        params = []
        for event_id, update in plan.updates.items():
            last = timestamp_to_text(update.last_time)
            params.append((update.count, last, event_id, update.count, last))
        updated = connection.exec_driver_sql(_SQLITE_UPDATE, params).rowcount
    return WriteResult(max(inserted, 0), max(updated, 0))


@functools.cache
def _sqlite_insert_sql(dialect: sa.Dialect) -> str:
    statement = sqlite.insert(events).on_conflict_do_nothing(index_elements=[events.c.id])
    compiled = statement.compile(dialect=dialect, column_keys=list(COLUMNS))
    if compiled.positiontup != list(COLUMNS):
        raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
    return compiled.string


# Times in SQLite are text of one fixed format, so max() and comparisons order them.
_SQLITE_UPDATE = (
    "UPDATE events SET count = max(count, ?), last_time = max(last_time, ?) "
    "WHERE id = ? AND (count < ? OR last_time < ?)"
)


def _write_postgresql(connection: Connection, plan: _Plan) -> WriteResult:
    """PostgreSQL: new events by text COPY straight into `events`; updates (and the rare
    replay) through a staging table and one set-based statement."""
    driver = connection.connection.driver_connection
    inserted = updated = 0
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        if plan.created:
            inserted = _insert_new(cursor, list(plan.created.values()))
        if plan.updates:
            cursor.execute(_create_stage(_UPDATE_STAGE))
            lines = (
                event_to_copy_line(u, u.count, timestamp_to_text(u.last_time))
                for u in plan.updates.values()
            )
            _copy(cursor, _UPDATE_STAGE, lines)
            cursor.execute(_UPSERT_FROM_STAGE)
            for (fresh,) in cursor.fetchall():
                if fresh:
                    inserted += 1
                else:
                    updated += 1
    return WriteResult(inserted, updated)


def _insert_new(cursor: psycopg.Cursor[Any], new: list[event_pb2.Event]) -> int:
    """COPY `new` into `events` inside a savepoint. A replay breaks the primary key: then
    roll back to the savepoint and insert through the staging table, skipping stored ids."""
    cursor.execute(f"SAVEPOINT {_SAVEPOINT}")
    try:
        inserted = _copy(cursor, "events", map(event_to_copy_line, new))
    except psycopg.errors.UniqueViolation:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        cursor.execute(_create_stage(_STAGE))
        _copy(cursor, _STAGE, map(event_to_copy_line, new))
        cursor.execute(_INSERT_FROM_STAGE)
        return max(cursor.rowcount, 0)
    cursor.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    return inserted


def _copy(cursor: psycopg.Cursor[Any], table: str, lines: Iterable[str]) -> int:
    """COPY text `lines` into `table`, in chunks; the number of rows copied."""
    lines = iter(lines)
    with cursor.copy(f"COPY {table} ({_COLUMN_LIST}) FROM STDIN") as copy:
        while chunk := "".join(itertools.islice(lines, _CHUNK)):
            copy.write(chunk)
    return cursor.rowcount


class SqlWriter:
    """Writes batches of changes to a SQL database, one transaction per batch.

    Database work runs on the writer's own thread, so the event loop never blocks on it
    and batches are applied in the order they are handed in. It `stores`: what it has
    written, queries find.
    """

    stores = True

    def __init__(self, engine: Engine, name: str = "sql") -> None:
        self.name = name
        self.engine = engine
        self.inserted = 0
        self.updated = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"writer-{name}")
        self._closed = False

    def write_blocking(self, changes: Sequence[Change]) -> WriteResult:
        """Write one batch in one transaction, on the calling thread."""
        with self.engine.begin() as connection:
            result = write_changes(connection, changes)
        self.inserted += result.inserted
        self.updated += result.updated
        return result

    async def write(self, changes: Sequence[Change]) -> None:
        if self._closed:
            raise RuntimeError(f"writer {self.name!r} is closed")
        if not changes:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.write_blocking, changes)
        except sa.exc.DataError as exc:  # a value the database refuses: the same every time
            raise PermanentWriteError(f"the database refused the batch: {exc.orig}") from exc

    async def close(self) -> None:
        """Wait for the batch in progress, then stop the thread (the engine stays open)."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)


def build(options: SqlOptions, name: str, context: BuildContext) -> SqlWriter:
    if context.engine is None:
        raise ValueError("the SQL writer needs the proxy's database, which is not open")
    return SqlWriter(context.engine, name=name)
