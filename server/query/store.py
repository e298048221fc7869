"""Reading stored events: keyset-paginated listings and lookups by id (blocking calls)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from protoevents.v1 import event_pb2
from server.db.models import events
from server.db.rows import row_to_event, timestamp_to_datetime
from server.query.errors import UnavailableError
from server.query.filters import EventQuery
from server.query.page_token import Cursor

T = TypeVar("T")


class EventStore:
    """Queries of the `events` table through SQLAlchemy Core. Blocking: call from a worker
    thread. A database that cannot be reached raises UnavailableError."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name

    def list_events(
        self,
        query: EventQuery,
        *,
        newest_first: bool = True,
        limit: int = 50,
        after: Cursor | None = None,
    ) -> tuple[list[event_pb2.Event], bool]:
        """Up to `limit` matching events ordered by (time, id), strictly after `after` in that
        order; and whether more follow."""
        c = events.c
        stmt = sa.select(events).where(*query.conditions(self.dialect))
        if after is not None:
            key = sa.tuple_(c.time, c.id)
            bound = sa.tuple_(sa.literal(after.time, c.time.type), sa.literal(after.id, c.id.type))
            stmt = stmt.where(key < bound if newest_first else key > bound)
        if newest_first:
            stmt = stmt.order_by(c.time.desc(), c.id.desc())
        else:
            stmt = stmt.order_by(c.time.asc(), c.id.asc())
        stmt = stmt.limit(limit + 1)

        def run() -> list[sa.RowMapping]:
            with self.engine.connect() as connection:
                return list(connection.execute(stmt).mappings())

        rows = self._guard(run)
        return [row_to_event(dict(row)) for row in rows[:limit]], len(rows) > limit

    def get_event(self, event_id: str) -> event_pb2.Event | None:
        stmt = sa.select(events).where(events.c.id == event_id)

        def run() -> sa.RowMapping | None:
            with self.engine.connect() as connection:
                return connection.execute(stmt).mappings().first()

        row = self._guard(run)
        return None if row is None else row_to_event(dict(row))

    def recent(self, query: EventQuery, count: int) -> list[event_pb2.Event]:
        """The `count` newest matching events, oldest of them first."""
        found, _ = self.list_events(query, newest_first=True, limit=count)
        return found[::-1]

    @staticmethod
    def cursor_of(event: event_pb2.Event) -> Cursor:
        """The position of a stored event in listings."""
        return Cursor(timestamp_to_datetime(event.time), event.id)

    def _guard(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            where = self.engine.url.render_as_string(hide_password=True)
            raise UnavailableError(f"the event database {where} is unavailable: {reason}") from None
