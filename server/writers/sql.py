"""The SQL writer: stores new events and applies dedup updates, idempotently, per batch."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, Engine

from protoevents.v1 import event_pb2
from server.changes import UPDATED, Change
from server.db.models import UtcDateTime, events
from server.db.rows import (
    COLUMNS,
    event_to_copy_values,
    event_to_sqlite_values,
    timestamp_to_datetime,
)


def _quote(name: str) -> str:
    return f'"{name}"'


# PostgreSQL staging tables: temporary (no WAL), one per session, emptied at each commit.
_STAGE = "protoevents_events_stage"
_UPDATE_STAGE = "protoevents_updates_stage"
_TIMES = ("time", "first_time", "last_time", "received_time")
_STAGE_COLUMNS = {
    name: "int8" if name in _TIMES or name == "count" else "int4" if name == "severity" else "text"
    for name in COLUMNS
}
_STAGE_TYPES = list(_STAGE_COLUMNS.values())
_CREATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_STAGE} ("
    + ", ".join(f"{_quote(name)} {kind}" for name, kind in _STAGE_COLUMNS.items())
    + ") ON COMMIT DELETE ROWS"
)


def _stage_expression(name: str) -> str:
    if name in _TIMES:
        return f"timestamptz 'epoch' + {_quote(name)} * interval '1 microsecond'"
    if name in ("attributes", "data"):
        return f"{_quote(name)}::jsonb"
    return _quote(name)


_INSERT_FROM_STAGE = (
    f"INSERT INTO events ({', '.join(_quote(name) for name in COLUMNS)}) "
    f"SELECT {', '.join(_stage_expression(name) for name in COLUMNS)} FROM {_STAGE} "
    "ON CONFLICT (id) DO NOTHING"
)
_CREATE_UPDATE_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_UPDATE_STAGE} "
    "(id text PRIMARY KEY, count int8 NOT NULL, last_time int8 NOT NULL) ON COMMIT DELETE ROWS"
)
_UPDATE_FROM_STAGE = (
    "UPDATE events AS e SET count = GREATEST(e.count, s.count), "
    "last_time = GREATEST(e.last_time, s.last_time) "
    f"FROM (SELECT id, count, timestamptz 'epoch' + last_time * interval '1 microsecond' "
    f"AS last_time FROM {_UPDATE_STAGE}) AS s "
    "WHERE e.id = s.id AND (s.count > e.count OR s.last_time > e.last_time)"
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one batch changed: rows inserted (replays are not) and rows whose count or
    last time an update raised."""

    inserted: int
    updated: int


@dataclass(slots=True)
class _Plan:
    """A batch reduced to one insert per id and one merged update per id."""

    inserts: dict[str, event_pb2.Event]
    updates: dict[str, tuple[int, tuple[int, int]]]


def _plan(changes: Sequence[Change]) -> _Plan:
    inserts: dict[str, event_pb2.Event] = {}
    updates: dict[str, tuple[int, tuple[int, int]]] = {}
    for change in changes:
        event = change.event
        event_id = event.id
        if event_id not in inserts:
            # An update carries the whole first event: inserting it when the row is missing
            # makes the batch correct whatever the order of its changes.
            inserts[event_id] = event
        if change.kind == UPDATED:
            last = event.last_time
            count, last_key = event.count, (last.seconds, last.nanos)
            previous = updates.get(event_id)
            if previous is not None:
                count, last_key = max(count, previous[0]), max(last_key, previous[1])
            updates[event_id] = (count, last_key)
    return _Plan(inserts, updates)


def _last_time(key: tuple[int, int]) -> Any:
    seconds, nanos = key
    stamp = event_pb2.Event().last_time
    stamp.seconds, stamp.nanos = seconds, nanos
    return timestamp_to_datetime(stamp)


def write_changes(connection: Connection, changes: Sequence[Change]) -> WriteResult:
    """Apply a batch of changes inside the caller's transaction.

    CREATED inserts the event unless its id is stored (a replay); UPDATED raises the stored
    `count` and `last_time` to the update's when higher (inserting the event first if it is
    missing). Applying the same batch twice, or its updates in any order, leaves the same rows.
    """
    plan = _plan(changes)
    if not plan.inserts:
        return WriteResult(0, 0)
    if connection.dialect.name == "postgresql":
        return _write_postgresql(connection, plan)
    if connection.dialect.name == "sqlite":
        return _write_sqlite(connection, plan)
    raise NotImplementedError(f"no SQL writer for the {connection.dialect.name} dialect")


def _write_sqlite(connection: Connection, plan: _Plan) -> WriteResult:
    """SQLite: executemany of the compiled Core insert (ON CONFLICT DO NOTHING) with rows
    already in SQLite's storage form, then one executemany of the merged updates."""
    inserted = connection.exec_driver_sql(
        _sqlite_insert_sql(connection.dialect),
        [event_to_sqlite_values(event) for event in plan.inserts.values()],
    ).rowcount
    updated = 0
    if plan.updates:
        updated = connection.execute(
            _SQLITE_UPDATE,
            [
                {"event_id": event_id, "new_count": count, "new_last_time": _last_time(last)}
                for event_id, (count, last) in plan.updates.items()
            ],
        ).rowcount
    return WriteResult(max(inserted, 0), max(updated, 0))


@functools.cache
def _sqlite_insert_sql(dialect: sa.Dialect) -> str:
    statement = sqlite.insert(events).on_conflict_do_nothing(index_elements=[events.c.id])
    compiled = statement.compile(dialect=dialect, column_keys=list(COLUMNS))
    if compiled.positiontup != list(COLUMNS):
        raise RuntimeError(f"unexpected parameter order {compiled.positiontup}")
    return compiled.string


_new_count = sa.bindparam("new_count", type_=sa.BigInteger)
_new_last = sa.bindparam("new_last_time", type_=UtcDateTime)
_SQLITE_UPDATE = (
    sa.update(events)
    .where(events.c.id == sa.bindparam("event_id"))
    .where(sa.or_(events.c.count < _new_count, events.c.last_time < _new_last))
    .values(
        count=sa.func.max(events.c.count, _new_count),
        last_time=sa.func.max(events.c.last_time, _new_last),
    )
)


def _write_postgresql(connection: Connection, plan: _Plan) -> WriteResult:
    """PostgreSQL: binary COPY into session-local staging tables, then one set-based statement
    each. Times travel as integer microseconds and JSON as text, the cheapest forms to send."""
    driver = connection.connection.driver_connection
    with driver.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(_CREATE_STAGE)
        with cursor.copy(f"COPY {_STAGE} FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGE_TYPES)
            for event in plan.inserts.values():
                copy.write_row(event_to_copy_values(event))
        cursor.execute(_INSERT_FROM_STAGE)
        inserted = cursor.rowcount
        updated = 0
        if plan.updates:
            cursor.execute(_CREATE_UPDATE_STAGE)
            with cursor.copy(f"COPY {_UPDATE_STAGE} FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["text", "int8", "int8"])
                for event_id, (count, (seconds, nanos)) in plan.updates.items():
                    copy.write_row((event_id, count, seconds * 1_000_000 + nanos // 1000))
            cursor.execute(_UPDATE_FROM_STAGE)
            updated = cursor.rowcount
    return WriteResult(max(inserted, 0), max(updated, 0))


class SqlWriter:
    """Writes batches of changes to a SQL database, one transaction per batch.

    Database work runs on the writer's own thread, so the event loop never blocks on it
    and batches are applied in the order they are handed in.
    """

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
        await loop.run_in_executor(self._executor, self.write_blocking, changes)

    async def close(self) -> None:
        """Wait for the batch in progress, then stop the thread (the engine stays open)."""
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)
