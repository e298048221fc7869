"""Conversion between protobuf Events and rows of the `events` table (on the hot path).

Each driver gets the row in the form it takes without conversion: Python values
(`event_to_values`, for SQLAlchemy Core), SQLite's stored text (`event_to_sqlite_values`) and
a PostgreSQL text COPY line (`event_to_copy_line`). Each lists the columns itself: reading
them through one shared function made the two hot encoders 11-27 % slower per row (medians
of 15, old and new interleaved in one run), so the lists stay apart; the SQL writer's tests
store and read back through each of them on SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf import struct_pb2, timestamp_pb2

from protoevents.proxy.db.models import events
from protoevents.v1 import event_pb2

# Column names of `events`, in table order: the order of `event_to_values`.
COLUMNS: tuple[str, ...] = tuple(c.name for c in events.columns)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
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
        event.site,
        event.alert,
    )


@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    return (_NAIVE_EPOCH + timedelta(seconds=seconds)).isoformat(" ")


def timestamp_to_text(ts: timestamp_pb2.Timestamp) -> str:
    """UTC text to the microsecond ("2024-05-01 12:00:00.000000"), as SQLAlchemy stores times
    in SQLite; PostgreSQL reads it as a timestamptz with "+00" appended."""
    return f"{_second_text(ts.seconds)}.{ts.nanos // 1000:06d}"


def _json_text(value: Any) -> str:
    # orjson: UTF-8 output, never NaN (a Struct cannot hold one that JSON could carry).
    return orjson.dumps(value).decode()


def event_to_sqlite_values(event: event_pb2.Event) -> tuple[Any, ...]:
    """The row of `event` in COLUMNS order exactly as SQLAlchemy stores it in SQLite (JSON
    text, times as UTC text), for a driver-level executemany of a compiled Core statement."""
    source = event.source
    obj = event.object
    attributes = event.attributes
    time = timestamp_to_text(event.time)
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
        _json_text(dict(attributes)) if attributes else "{}",
        _json_text(struct_to_dict(event.data)) if event.HasField("data") else None,
        time,
        _same_time(event.first_time, event.time, time),
        _same_time(event.last_time, event.time, time),
        timestamp_to_text(event.received_time),
        event.count,
        event.site,
        event.alert,
    )


def _same_time(ts: timestamp_pb2.Timestamp, time: timestamp_pb2.Timestamp, text: str) -> str:
    if ts.seconds == time.seconds and ts.nanos == time.nanos:
        return text
    return timestamp_to_text(ts)


# The column order of `event_to_copy_line`: `data`, the one field that may be NULL, last.
COPY_COLUMNS: tuple[str, ...] = (
    *("id", "type", "category", "message", "source_node", "source_component"),
    *("object_kind", "object_namespace", "object_name", "site", "attributes", "severity"),
    *("time", "first_time", "last_time", "received_time", "count", "alert", "data"),
)
_COPY_SPECIALS = re.compile(r"[\\\n\r]")
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(text: str) -> str:
    return text.translate(_COPY_ESCAPES)


def event_to_copy_line(event: event_pb2.Event, count: int = 0, last_time: str = "") -> str:
    """The row of `event` as one line of PostgreSQL text COPY, columns in COPY_COLUMNS order.

    Times are UTC text, `attributes` and `data` JSON, `alert` t or f. `count` and `last_time`
    (text of `timestamp_to_text`), when given, replace the event's.
    """
    source = event.source
    obj = event.object
    attributes = event.attributes
    head = (
        event.id,
        event.type,
        event.category,
        event.message,
        source.node,
        source.component,
        obj.kind,
        obj.namespace,
        obj.name,
        event.site,
        _json_text(dict(attributes)) if attributes else "{}",
    )
    line = "\t".join(head)
    if line.count("\t") != len(head) - 1 or _COPY_SPECIALS.search(line) is not None:
        line = "\t".join(map(_copy_text, head))
    if event.HasField("data"):
        data = _json_text(struct_to_dict(event.data))
        if "\\" in data:  # JSON escapes no other COPY special
            data = _copy_text(data)
    else:
        data = "\\N"
    time = event.time
    text = timestamp_to_text(time)
    first = _same_time(event.first_time, time, text)
    last = last_time or _same_time(event.last_time, time, text)
    received = timestamp_to_text(event.received_time)
    alert = "t" if event.alert else "f"
    return (
        f"{line}\t{event.severity}\t{text}+00\t{first}+00\t{last}+00\t{received}+00\t"
        f"{count or event.count}\t{alert}\t{data}\n"
    )


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
        site=row["site"],
        alert=row["alert"],
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
