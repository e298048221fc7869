"""Reading stored events: keyset-paginated listings and lookups by id (blocking calls)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from protoevents.proxy.db.models import events
from protoevents.proxy.db.rows import row_to_event, timestamp_to_datetime
from protoevents.proxy.query.filters import EventQuery
from protoevents.proxy.query.limits import Budget, QueryLimits
from protoevents.proxy.query.page_token import Cursor
from protoevents.proxy.statuses import UnavailableError
from protoevents.v1 import event_pb2

T = TypeVar("T")
# Virtual machine steps of SQLite between two looks at the clock (about 0.1 ms of work).
_SQLITE_PROGRESS_STEPS = 1000
# PostgreSQL's SQLSTATE for a statement cancelled, by statement_timeout among others.
_QUERY_CANCELED = "57014"


class EventStore:
    """Queries of the `events` table through SQLAlchemy Core. Blocking: call from a worker
    thread. A database that cannot be reached raises UnavailableError; a query given a
    `budget` is cut when it runs out (PostgreSQL's statement_timeout, SQLite's progress
    handler) and raises DeadlineExceededError."""

    def __init__(self, engine: Engine, limits: QueryLimits | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.limits = limits or QueryLimits()

    def list_events(
        self,
        query: EventQuery,
        *,
        newest_first: bool = True,
        limit: int = 50,
        after: Cursor | None = None,
        budget: Budget | None = None,
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
            with self.engine.connect() as connection, self._limited(connection, budget):
                return list(connection.execute(stmt).mappings())

        if query.scans and budget is not None:
            with self.limits.scan(budget):
                rows = self._guard(run, budget)
        else:
            rows = self._guard(run, budget)
        return [row_to_event(dict(row)) for row in rows[:limit]], len(rows) > limit

    def get_event(self, event_id: str, budget: Budget | None = None) -> event_pb2.Event | None:
        stmt = sa.select(events).where(events.c.id == event_id)

        def run() -> sa.RowMapping | None:
            with self.engine.connect() as connection, self._limited(connection, budget):
                return connection.execute(stmt).mappings().first()

        row = self._guard(run, budget)
        return None if row is None else row_to_event(dict(row))

    def recent(
        self, query: EventQuery, count: int, budget: Budget | None = None
    ) -> list[event_pb2.Event]:
        """The `count` newest matching events, oldest of them first."""
        found, _ = self.list_events(query, newest_first=True, limit=count, budget=budget)
        return found[::-1]

    @staticmethod
    def cursor_of(event: event_pb2.Event) -> Cursor:
        """The position of a stored event in listings."""
        return Cursor(timestamp_to_datetime(event.time), event.id)

    @contextlib.contextmanager
    def _limited(self, connection: Connection, budget: Budget | None) -> Iterator[None]:
        """Make the database end the block's statements when `budget` runs out."""
        if budget is None:
            yield
            return
        left = self.limits.left(budget)
        if self.dialect == "postgresql":
            # SET LOCAL: for this transaction only, which ends with the connection's block.
            connection.exec_driver_sql(
                f"SET LOCAL statement_timeout = {max(1, round(left * 1000))}"
            )
            yield
            return
        if self.dialect != "sqlite":
            yield
            return
        raw = connection.connection.driver_connection
        assert raw is not None  # a live connection inside its block
        clock, deadline = self.limits.clock, budget.deadline
        # SQLite calls this every N virtual machine steps; a true result interrupts the query.
        raw.set_progress_handler(lambda: clock() >= deadline, _SQLITE_PROGRESS_STEPS)
        try:
            yield
        finally:
            raw.set_progress_handler(None, _SQLITE_PROGRESS_STEPS)

    def _guard(self, work: Callable[[], T], budget: Budget | None = None) -> T:
        try:
            return work()
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            if budget is not None and _timed_out(exc, budget, self.limits):
                raise self.limits.exceeded(budget) from None
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            where = self.engine.url.render_as_string(hide_password=True)
            raise UnavailableError(f"the event database {where} is unavailable: {reason}") from None


def _timed_out(
    exc: sa.exc.DBAPIError | sa.exc.TimeoutError, budget: Budget, limits: QueryLimits
) -> bool:
    """Whether a database error is the end of the query's time, not the database failing."""
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == _QUERY_CANCELED:
        return True
    return "interrupted" in str(orig) and limits.clock() >= budget.deadline
