"""The SQL writer against real SQLite and PostgreSQL: inserts, updates, idempotent replays."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.proxy.db.models import events
from protoevents.proxy.db.rows import event_to_row, row_to_event
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.v1 import event_pb2
from tests.support.events import repeated, stored_event


def stored(engine: Engine) -> dict[str, event_pb2.Event]:
    with engine.connect() as connection:
        rows = connection.execute(sa.select(events)).mappings().all()
    return {row["id"]: row_to_event(row) for row in rows}


def write(writer: SqlWriter, changes: list[Change]) -> None:
    asyncio.run(writer.write(changes))


@pytest.fixture
def writer(migrated_engine: Engine) -> Any:
    writer = SqlWriter(migrated_engine, name="sql-test")
    yield writer
    asyncio.run(writer.close())


def test_new_events_are_stored_exactly(writer: SqlWriter, migrated_engine: Engine) -> None:
    batch = [stored_event(n) for n in range(250)]
    write(writer, [Change(CREATED, event) for event in batch])
    assert stored(migrated_engine) == {event.id: event for event in batch}
    assert writer.inserted == 250


def test_replaying_a_batch_stores_nothing_twice(writer: SqlWriter, migrated_engine: Engine) -> None:
    batch = [Change(CREATED, stored_event(n)) for n in range(100)]
    write(writer, batch)
    write(writer, batch)
    write(writer, batch[:10] + batch[:10])
    assert len(stored(migrated_engine)) == 100
    assert writer.inserted == 100


def test_a_batch_mixing_replays_and_new_events_stores_the_new_ones(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    # On PostgreSQL the replayed ids break the direct COPY: the batch falls back to the
    # staging table within the same transaction, and its update still applies.
    old = [stored_event(n) for n in range(20)]
    write(writer, [Change(CREATED, event) for event in old])
    new = [stored_event(n) for n in range(20, 30)]
    update = repeated(old[3], 4, later_ms=50)
    write(writer, [Change(CREATED, e) for e in old[10:] + new] + [Change(UPDATED, update)])
    expected = {event.id: event for event in old + new} | {update.id: update}
    assert stored(migrated_engine) == expected
    assert (writer.inserted, writer.updated) == (30, 1)


def test_updates_raise_count_and_last_time_and_are_idempotent(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    first = stored_event(1)
    other = stored_event(2)
    write(writer, [Change(CREATED, first), Change(CREATED, other)])
    third = repeated(first, 3, later_ms=900)
    second = repeated(first, 2, later_ms=400)
    # Out of order, replayed: the highest count and the latest time win.
    write(writer, [Change(UPDATED, third), Change(UPDATED, second)])
    write(writer, [Change(UPDATED, second), Change(UPDATED, third)])
    rows = stored(migrated_engine)
    assert rows[first.id] == third
    assert rows[other.id] == other
    assert writer.updated == 1


def test_created_and_updated_of_one_id_in_one_batch(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    first = stored_event(7)
    later = repeated(first, 4, later_ms=2500)
    write(
        writer,
        [Change(CREATED, first), Change(UPDATED, repeated(first, 2, 100))] * 2
        + [Change(UPDATED, later)],
    )
    assert stored(migrated_engine) == {first.id: later}


def test_an_update_of_a_missing_row_stores_the_event(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    first = stored_event(8)
    update = repeated(first, 5, later_ms=30)
    write(writer, [Change(UPDATED, update)])
    write(writer, [Change(CREATED, first)])  # the CREATED arriving late changes nothing
    assert stored(migrated_engine) == {first.id: update}


def test_unicode_large_attributes_and_data_round_trip(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    data = {
        "nested": {"list": [1.5, "two", None, True, {"deep": ["x" * 10_000]}]},
        "ünïcode": "日本語 🚀 \\ \" ' \t\n",
        "big": 1e300,
        "small": -2.5e-300,
        "empty": {},
        "none": None,
    }
    event = stored_event(3, data=data, message="ärger 🔥 " * 500, node="nœud-7")
    for n in range(200):
        event.attributes[f"key-{n}-ключ"] = "värde " * 50
    no_data = stored_event(4)
    empty_data = stored_event(5, data={})
    no_object = stored_event(6)
    no_object.ClearField("object")
    batch = [event, no_data, empty_data, no_object]
    write(writer, [Change(CREATED, e) for e in batch])
    assert stored(migrated_engine) == {e.id: e for e in batch}


def test_the_site_is_stored_kept_by_updates_and_empty_for_local_events(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    local = stored_event(1)
    forwarded = stored_event(2)
    forwarded.site = "site-a"
    # The COPY text escapes reach the site too.
    odd = stored_event(3)
    odd.site = "site\twith\\odd\ncharacters ✓"
    write(writer, [Change(CREATED, e) for e in (local, forwarded, odd)])
    update = repeated(forwarded, 3, later_ms=20)
    write(writer, [Change(UPDATED, update)])
    rows = stored(migrated_engine)
    assert rows == {local.id: local, forwarded.id: update, odd.id: odd}
    assert [rows[e.id].site for e in (local, forwarded, odd)] == ["", "site-a", odd.site]
    with migrated_engine.connect() as connection:
        sites = dict(connection.execute(sa.select(events.c.id, events.c.site)).all())
    assert sites == {local.id: "", forwarded.id: "site-a", odd.id: odd.site}


def test_the_alert_flag_is_stored_kept_by_updates_and_false_by_default(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    plain, forced = stored_event(1), stored_event(2)
    forced.alert = True
    write(writer, [Change(CREATED, e) for e in (plain, forced)])
    update = repeated(forced, 3, later_ms=20)
    # An update of an id not stored yet inserts its event, flag and all (the staging path).
    unseen = stored_event(3)
    unseen.alert = True
    write(writer, [Change(UPDATED, update), Change(UPDATED, repeated(unseen, 2, later_ms=5))])
    rows = stored(migrated_engine)
    assert {i: (e.alert, e.count) for i, e in rows.items()} == {
        plain.id: (False, 1),
        forced.id: (True, 3),
        unseen.id: (True, 2),
    }
    assert rows[forced.id] == update
    with migrated_engine.connect() as connection:
        flags = dict(connection.execute(sa.select(events.c.id, events.c.alert)).all())
    assert flags == {plain.id: False, forced.id: True, unseen.id: True}


def test_stored_times_compare_with_bound_datetimes(
    writer: SqlWriter, migrated_engine: Engine
) -> None:
    event = stored_event(9)
    write(writer, [Change(CREATED, event)])
    moment = event.time.ToDatetime(tzinfo=UTC)
    with migrated_engine.connect() as connection:
        found = connection.execute(
            sa.select(events.c.id, events.c.time).where(events.c.time == moment)
        ).all()
        later = connection.execute(
            sa.select(events.c.id).where(events.c.time > datetime(2030, 1, 1, tzinfo=UTC))
        ).all()
    assert found == [(event.id, moment)]
    assert later == []


def test_a_closed_writer_refuses_batches(migrated_engine: Engine) -> None:
    writer = SqlWriter(migrated_engine)
    asyncio.run(writer.close())
    with pytest.raises(RuntimeError, match="closed"):
        write(writer, [Change(CREATED, stored_event(1))])


_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
# Struct numbers are finite doubles (JSON has no NaN); jsonb keeps no negative zero.
_number = st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x + 0.0)
_json_leaf = st.none() | st.booleans() | _text | _number
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def events_strategy(draw: st.DrawFn) -> event_pb2.Event:
    event = stored_event(
        draw(st.integers(0, 10**6)),
        message=draw(_text),
        node=draw(_text.filter(lambda s: len(s) <= 253)),
        count=draw(st.integers(1, 2**62)),
        event_id=str(draw(st.uuids())),
    )
    event.site = draw(_text.filter(lambda s: len(s) <= 64))
    event.alert = draw(st.booleans())
    event.attributes.clear()
    event.attributes.update(draw(st.dictionaries(_text, _text, max_size=5)))
    data = draw(st.none() | st.dictionaries(_text, _json, max_size=5))
    if data is not None:
        event.data.update(data)
    micros = draw(st.integers(978_307_200_000_000, 4_102_444_800_000_000))
    event.time.FromMicroseconds(micros)
    event.first_time.FromMicroseconds(micros)
    event.last_time.FromMicroseconds(micros + draw(st.integers(0, 10**9)))
    return event


@given(event=events_strategy())
@settings(max_examples=200, deadline=None)
def test_row_conversion_round_trips(event: event_pb2.Event) -> None:
    assert row_to_event(event_to_row(event)) == event


# Ingest never hands a writer two new events with one id: ids are unique per batch.
@given(batch=st.lists(events_strategy(), min_size=1, max_size=5, unique_by=lambda e: e.id))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_arbitrary_events_round_trip_through_the_database(
    writer: SqlWriter, migrated_engine: Engine, batch: list[event_pb2.Event]
) -> None:
    with migrated_engine.begin() as connection:  # the database outlives each example
        connection.execute(events.delete())
    write(writer, [Change(CREATED, event) for event in batch])
    rows = stored(migrated_engine)
    for event in batch:
        assert rows[event.id] == event
