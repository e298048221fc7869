"""Migration 0002 on a database at 0001 holding events: the site column, '' for old rows."""

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
LATER = {"site", "alert"}  # the columns of events added after 0001


@pytest.fixture
def engine_at_0001(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to revision 0001 only."""
    engine = create_engine(database_url)
    assert migrate.upgrade(engine, "0001") == "0001"
    yield engine
    engine.dispose()


def store_as_0001(engine: Engine, stored: list[event_pb2.Event]) -> None:
    """Insert events as a protoevents of revision 0001 did: every column but the site (and
    the later alert flag)."""
    rows = [{k: v for k, v in event_to_row(e).items() if k not in LATER} for e in stored]
    with engine.begin() as connection:
        connection.execute(events.insert(), rows)


def listed(engine: Engine, site: str = "") -> list[event_pb2.Event]:
    query = parse_filter(query_service_pb2.EventFilter(site=site), REGISTRY)
    found, _ = EventStore(engine).list_events(query, newest_first=False)
    return found


def columns(engine: Engine) -> set[str]:
    return {column["name"] for column in sa.inspect(engine).get_columns("events")}


def index_columns(engine: Engine) -> dict[str | None, list[str | None]]:
    return {ix["name"]: ix["column_names"] for ix in sa.inspect(engine).get_indexes("events")}


def test_events_stored_at_0001_read_back_with_no_site_after_the_upgrade(
    engine_at_0001: Engine,
) -> None:
    engine = engine_at_0001
    assert "site" not in columns(engine)
    old = [stored_event(n) for n in range(3)]
    store_as_0001(engine, old)

    assert migrate.upgrade(engine) == migrate.head_revision()
    assert index_columns(engine)["ix_events_site_time"] == ["site", "time"]
    assert migrate.schema_diff(engine) == []
    assert listed(engine) == old
    assert all(event.site == "" for event in listed(engine))
    with engine.connect() as connection:
        sites = connection.execute(sa.select(events.c.site).distinct()).scalars().all()
    assert sites == [""]

    # What the upgraded proxy stores next carries its site, and the filter tells them apart.
    forwarded = stored_event(10)
    forwarded.site = "site-a"
    SqlWriter(engine).write_blocking([Change(CREATED, forwarded)])
    assert listed(engine, site="site-a") == [forwarded]
    assert listed(engine) == [*old, forwarded]


def test_a_downgrade_to_0001_drops_the_site_and_keeps_the_events(
    migrated_engine: Engine,
) -> None:
    engine = migrated_engine
    forwarded = stored_event(1)
    forwarded.site = "site-a"
    SqlWriter(engine).write_blocking([Change(CREATED, forwarded)])
    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0001")
    assert migrate.current_revision(engine) == "0001"
    assert "site" not in columns(engine)
    assert "ix_events_site_time" not in index_columns(engine)
    with engine.connect() as connection:
        ids = connection.execute(sa.text("SELECT id FROM events")).scalars().all()
    assert ids == [forwarded.id]

    migrate.upgrade(engine)
    local = event_pb2.Event()
    local.CopyFrom(forwarded)
    local.site = ""  # the downgrade forgot it
    assert listed(engine) == [local]
