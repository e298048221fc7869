"""Conversion between protobuf Events and rows of the `events` table (on the hot path)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from protoevents.v1 import event_pb2
from server.db.models import events

# Column names of `events`, in table order: the order of `event_to_values`.
COLUMNS: tuple[str, ...] = tuple(c.name for c in events.columns)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_JsonValue = None | bool | float | str | list[Any] | dict[str, Any]


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    """An aware UTC datetime; sub-microsecond digits are dropped (the databases keep µs)."""
    return _EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def datetime_to_timestamp(value: datetime, out: timestamp_pb2.Timestamp) -> None:
    """Set `out` to `value` (naive values are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    out.seconds = delta.days * 86_400 + delta.seconds
    out.nanos = delta.microseconds * 1000


def _value(value: struct_pb2.Value) -> _JsonValue:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    return None


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON-able Python (numbers are floats, as Struct holds them)."""
    return {key: _value(value) for key, value in struct.fields.items()}


def event_to_values(event: event_pb2.Event) -> tuple[Any, ...]:
    """The row of `event` as a tuple in COLUMNS order.

    `attributes` is a dict, `data` a dict or None when the event has no data, times aware
    UTC datetimes. An event without an object stores empty object columns.
    """
    source = event.source
    obj = event.object
    # A new event's first and last times equal its time: convert that once.
    ts = event.time
    time = timestamp_to_datetime(ts)
    key = (ts.seconds, ts.nanos)
    ts = event.first_time
    first_time = time if (ts.seconds, ts.nanos) == key else timestamp_to_datetime(ts)
    ts = event.last_time
    last_time = time if (ts.seconds, ts.nanos) == key else timestamp_to_datetime(ts)
    return (
        event.id,
        event.type,
        event.severity,
        event.category,
        event.message,
        source.node,
        source.component,
        obj.kind,
        obj.namespace,
        obj.name,
        dict(event.attributes),
        struct_to_dict(event.data) if event.HasField("data") else None,
        time,
        first_time,
        last_time,
        timestamp_to_datetime(event.received_time),
        event.count,
    )


def timestamp_to_micros(ts: timestamp_pb2.Timestamp) -> int:
    """Microseconds since the Unix epoch (sub-microsecond digits dropped)."""
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def timestamp_to_sqlite(ts: timestamp_pb2.Timestamp) -> str:
    """The text SQLAlchemy stores for a UTC datetime in SQLite ("2024-05-01 12:00:00.000000")."""
    moment = _NAIVE_EPOCH + timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)
    return moment.isoformat(" ", "microseconds")


def _flat_values(
    event: event_pb2.Event, convert_time: Callable[[timestamp_pb2.Timestamp], Any]
) -> tuple[Any, ...]:
    source = event.source
    obj = event.object
    attributes = event.attributes
    return (
        event.id,
        event.type,
        event.severity,
        event.category,
        event.message,
        source.node,
        source.component,
        obj.kind,
        obj.namespace,
        obj.name,
        _dumps(dict(attributes)) if attributes else "{}",
        _dumps(struct_to_dict(event.data)) if event.HasField("data") else None,
        convert_time(event.time),
        convert_time(event.first_time),
        convert_time(event.last_time),
        convert_time(event.received_time),
        event.count,
    )


def event_to_copy_values(event: event_pb2.Event) -> tuple[Any, ...]:
    """The row of `event` in COLUMNS order for a PostgreSQL bulk COPY.

    Like `event_to_values`, but `attributes` and `data` are JSON text and the four times
    integer microseconds since the Unix epoch; the database converts them.
    """
    return _flat_values(event, timestamp_to_micros)


def event_to_sqlite_values(event: event_pb2.Event) -> tuple[Any, ...]:
    """The row of `event` in COLUMNS order exactly as SQLAlchemy stores it in SQLite (JSON
    text, times as UTC text), for a driver-level executemany of a compiled Core statement."""
    return _flat_values(event, timestamp_to_sqlite)


def event_to_row(event: event_pb2.Event) -> dict[str, Any]:
    """The row of `event` as a column -> value mapping (see `event_to_values`)."""
    return dict(zip(COLUMNS, event_to_values(event), strict=True))


def row_to_event(row: Mapping[str, Any]) -> event_pb2.Event:
    """The Event stored in `row` (a mapping of the `events` columns, e.g. `Result.mappings()`).

    The inverse of `event_to_row` for stored events (times at µs precision, an object
    reference with at least one field set, or none).
    """
    event = event_pb2.Event(
        id=row["id"],
        type=row["type"],
        severity=row["severity"],
        category=row["category"],
        message=row["message"],
        count=row["count"],
    )
    source = event.source
    source.node = row["source_node"]
    source.component = row["source_component"]
    kind, namespace, name = row["object_kind"], row["object_namespace"], row["object_name"]
    if kind or namespace or name:
        obj = event.object
        obj.kind = kind
        obj.namespace = namespace
        obj.name = name
    attributes = row["attributes"]
    if attributes:
        event.attributes.update(attributes)
    data = row["data"]
    if data is not None:
        event.data.SetInParent()
        event.data.update(data)
    datetime_to_timestamp(row["time"], event.time)
    datetime_to_timestamp(row["first_time"], event.first_time)
    datetime_to_timestamp(row["last_time"], event.last_time)
    datetime_to_timestamp(row["received_time"], event.received_time)
    return event
