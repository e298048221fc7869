"""Migration 0003 on a database at 0002 holding events: the alert column, false for old rows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.db.models import events
from protoevents.proxy.db.rows import event_to_row
from protoevents.proxy.query.filters import parse_filter
from protoevents.proxy.query.store import EventStore
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, query_service_pb2
from tests.support.events import stored_event

REGISTRY = Registry.builtin()


@pytest.fixture
def engine_at_0002(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to revision 0002 only."""
    engine = create_engine(database_url)
    assert migrate.upgrade(engine, "0002") == "0002"
    yield engine
    engine.dispose()


def store_as_0002(engine: Engine, stored: list[event_pb2.Event]) -> None:
    """Insert events as a protoevents of revision 0002 did: every column but the alert flag."""
    rows = [{k: v for k, v in event_to_row(e).items() if k != "alert"} for e in stored]
    with engine.begin() as connection:
        connection.execute(events.insert(), rows)


def listed(engine: Engine) -> list[event_pb2.Event]:
    query = parse_filter(query_service_pb2.EventFilter(), REGISTRY)
    found, _ = EventStore(engine).list_events(query, newest_first=False)
    return found


def alert_column(engine: Engine) -> dict[str, object] | None:
    found = [c for c in sa.inspect(engine).get_columns("events") if c["name"] == "alert"]
    return dict(found[0]) if found else None


def test_events_stored_at_0002_read_back_not_asking_for_an_alert_after_the_upgrade(
    engine_at_0002: Engine,
) -> None:
    engine = engine_at_0002
    assert alert_column(engine) is None
    old = [stored_event(n) for n in range(3)]
    store_as_0002(engine, old)

    assert migrate.upgrade(engine) == migrate.head_revision()
    column = alert_column(engine)
    assert column is not None
    assert isinstance(column["type"], sa.Boolean) and column["nullable"] is False
    assert migrate.schema_diff(engine) == []
    assert listed(engine) == old
    with engine.connect() as connection:
        flags = connection.execute(sa.select(events.c.alert).distinct()).scalars().all()
    assert flags == [False]

    # What the upgraded proxy stores next keeps its flag, and the query store reads it back.
    forced = stored_event(10)
    forced.alert = True
    SqlWriter(engine).write_blocking([Change(CREATED, forced)])
    assert listed(engine) == [*old, forced]
    assert EventStore(engine).get_event(forced.id) == forced
    # A row inserted without naming the column (an older writer) gets the default.
    late = stored_event(11)
    store_as_0002(engine, [late])
    assert EventStore(engine).get_event(late.id) == late


def test_a_downgrade_to_0002_drops_the_alert_flag_and_keeps_the_events(
    migrated_engine: Engine,
) -> None:
    engine = migrated_engine
    forced = stored_event(1)
    forced.alert = True
    SqlWriter(engine).write_blocking([Change(CREATED, forced)])
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0002")
    assert migrate.current_revision(engine) == "0002"
    assert alert_column(engine) is None
    with engine.connect() as connection:
        ids = connection.execute(sa.text("SELECT id FROM events")).scalars().all()
    assert ids == [forced.id]

    migrate.upgrade(engine)
    plain = event_pb2.Event()
    plain.CopyFrom(forced)
    plain.alert = False  # the downgrade forgot it
    assert listed(engine) == [plain]
