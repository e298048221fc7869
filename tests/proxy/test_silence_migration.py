"""Migration 0004 on a database at 0003 holding events: the alert_silences table, and back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine

from protoevents.proxy.alerts.silences import Matcher, SilenceStore
from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.db import migrate
from protoevents.proxy.db.engine import create_engine
from protoevents.proxy.writers.sql import SqlWriter
from tests.support.alert_clock import FakeClock
from tests.support.events import stored_event


@pytest.fixture
def engine_at_0003(database_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to revision 0003 only."""
    engine = create_engine(database_url)
    assert migrate.upgrade(engine, "0003") == "0003"
    yield engine
    engine.dispose()


def tables(engine: Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def event_ids(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT id FROM events")).scalars())


def test_the_upgrade_adds_the_silences_table_and_keeps_the_events(
    engine_at_0003: Engine,
) -> None:
    engine = engine_at_0003
    event = stored_event(1)
    SqlWriter(engine).write_blocking([Change(CREATED, event)])
    assert "alert_silences" not in tables(engine)

    assert migrate.upgrade(engine) == migrate.head_revision()
    assert "alert_silences" in tables(engine)
    assert migrate.schema_diff(engine) == []
    indexes = {ix["name"] for ix in sa.inspect(engine).get_indexes("alert_silences")}
    assert indexes == {"ix_alert_silences_ends_at"}
    assert event_ids(engine) == [event.id]

    clock = FakeClock()
    store = SilenceStore(engine, clock=clock)
    ends = datetime.fromtimestamp(clock.now, UTC) + timedelta(hours=1)
    made = store.create([Matcher("node", "node-1")], ends, "maintenance", "ops")
    assert store.list() == [made]


def test_a_downgrade_to_0003_drops_the_silences_and_keeps_the_events(
    migrated_engine: Engine,
) -> None:
    engine = migrated_engine
    event = stored_event(1)
    SqlWriter(engine).write_blocking([Change(CREATED, event)])
    clock = FakeClock()
    ends = datetime.fromtimestamp(clock.now, UTC) + timedelta(hours=1)
    SilenceStore(engine, clock=clock).create([Matcher("node", "n")], ends, "c", "a")

    with engine.begin() as connection:
        command.downgrade(migrate.alembic_config(connection), "0003")
    assert migrate.current_revision(engine) == "0003"
    assert "alert_silences" not in tables(engine)
    assert event_ids(engine) == [event.id]

    migrate.upgrade(engine)
    assert SilenceStore(engine, clock=clock).list() == []
    assert migrate.schema_diff(engine) == []
