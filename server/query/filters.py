"""EventFilter messages checked and turned into SQL conditions and an in-memory predicate."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy.db.models import events
from protoevents.proxy.db.rows import timestamp_to_datetime
from protoevents.proxy.fields import FIELD_LIMITS
from protoevents.proxy.statuses import InvalidArgumentError
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, query_service_pb2, severity_pb2

# Longest `message_contains`: longer than any message ingest accepts is pointless.
MAX_CONTAINS_CHARS = 4096
# Timestamps protobuf can represent: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799

_EXACT_FIELDS = {
    "node": "source_node",
    "component": "source_component",
    "object_kind": "object_kind",
    "object_namespace": "object_namespace",
    "object_name": "object_name",
    "site": "site",
}


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A checked EventFilter: the conditions an event must meet, all of them.

    Empty collections and strings mean "any"; `min_severity` 0 means any severity; times are
    aware UTC datetimes (start inclusive, end exclusive) at the databases' µs precision.
    """

    types: frozenset[str] = frozenset()
    min_severity: int = 0
    categories: frozenset[str] = frozenset()
    exact: tuple[tuple[str, str], ...] = ()  # (column name, value)
    start: datetime | None = None
    end: datetime | None = None
    message_contains: str = ""
    digest: bytes = b""  # identifies the filter as the client sent it (for page tokens)

    @property
    def scans(self) -> bool:
        """Whether no index serves it: a substring or a category must be read row by row."""
        return bool(self.message_contains or self.categories)

    def conditions(self, dialect: str) -> list[sa.ColumnElement[bool]]:
        """SQL conditions on `events`; every value is a bound parameter."""
        c = events.c
        where: list[sa.ColumnElement[bool]] = []
        if self.types:
            where.append(c.type.in_(sorted(self.types)))
        if self.min_severity:
            where.append(c.severity >= self.min_severity)
        if self.categories:
            where.append(c.category.in_(sorted(self.categories)))
        where.extend(c[column] == value for column, value in self.exact)
        if self.start is not None:
            where.append(c.time >= self.start)
        if self.end is not None:
            where.append(c.time < self.end)
        if self.message_contains:
            # Case-sensitive on both backends (SQLite's LIKE is not), no wildcard escaping.
            position = "instr" if dialect == "sqlite" else "strpos"
            where.append(getattr(sa.func, position)(c.message, self.message_contains) > 0)
        return where

    def matches(self, event: event_pb2.Event) -> bool:
        """Whether `event` meets the conditions (the same as `conditions`, in Python)."""
        if self.types and event.type not in self.types:
            return False
        if event.severity < self.min_severity:
            return False
        if self.categories and event.category not in self.categories:
            return False
        for column, value in self.exact:
            if _column_value(event, column) != value:
                return False
        if self.start is not None or self.end is not None:
            time = timestamp_to_datetime(event.time)
            if self.start is not None and time < self.start:
                return False
            if self.end is not None and time >= self.end:
                return False
        return self.message_contains in event.message


def _column_value(event: event_pb2.Event, column: str) -> str:
    if column == "site":
        return event.site
    if column == "source_node":
        return event.source.node
    if column == "source_component":
        return event.source.component
    obj = event.object
    if column == "object_kind":
        return obj.kind
    if column == "object_namespace":
        return obj.namespace
    return obj.name


def parse_filter(
    message: query_service_pb2.EventFilter, registry: Registry, field: str = "filter"
) -> EventQuery:
    """Check an EventFilter against the registry. Raises InvalidArgumentError naming the
    field (`filter.types[1]`, `filter.min_severity`, ...) of the first problem found."""
    types = frozenset(_types(message.types, registry, f"{field}.types"))
    severity = message.min_severity
    if severity not in severity_pb2.Severity.values():
        known = ", ".join(severity_pb2.Severity.keys())
        raise InvalidArgumentError(
            f"{field}.min_severity", f"unknown severity value {severity}; expected one of {known}"
        )
    known_categories = set(registry.categories)
    for index, category in enumerate(message.categories):
        if category not in known_categories:
            raise InvalidArgumentError(
                f"{field}.categories[{index}]",
                f"unknown category {category!r}; known: {', '.join(sorted(known_categories))}",
            )
    exact = []
    for name, column in _EXACT_FIELDS.items():
        value: str = getattr(message, name)
        if len(value) > FIELD_LIMITS[column]:
            raise InvalidArgumentError(
                f"{field}.{name}", f"longer than {FIELD_LIMITS[column]} characters"
            )
        _no_nul(value, f"{field}.{name}")
        if value:
            exact.append((column, value))
    start = _time(message, "start_time", field)
    end = _time(message, "end_time", field)
    if start is not None and end is not None and end <= start:
        raise InvalidArgumentError(
            f"{field}.end_time",
            f"{end.isoformat()} is not after {field}.start_time {start.isoformat()}",
        )
    if len(message.message_contains) > MAX_CONTAINS_CHARS:
        raise InvalidArgumentError(
            f"{field}.message_contains", f"longer than {MAX_CONTAINS_CHARS} characters"
        )
    _no_nul(message.message_contains, f"{field}.message_contains")
    return EventQuery(
        types=types,
        min_severity=severity,
        categories=frozenset(message.categories),
        exact=tuple(exact),
        start=start,
        end=end,
        message_contains=message.message_contains,
        digest=hashlib.sha256(message.SerializeToString(deterministic=True)).digest(),
    )


def _no_nul(value: str, field: str) -> None:
    """Refuse a NUL character: no stored event holds one (ingest refuses them, PostgreSQL
    text cannot hold them), and a database would fail on it rather than match nothing."""
    if "\x00" in value:
        raise InvalidArgumentError(
            field, "holds a NUL character, which no event can hold (ingest refuses them)"
        )


def _types(names: Sequence[str], registry: Registry, field: str) -> list[str]:
    """Qualified names of the named types (value names are accepted when unambiguous)."""
    resolved = []
    for index, name in enumerate(names):
        if not name:
            raise InvalidArgumentError(f"{field}[{index}]", "empty event type name")
        try:
            resolved.append(registry.lookup(name).name)
        except KeyError as exc:
            raise InvalidArgumentError(f"{field}[{index}]", str(exc.args[0])) from None
    return resolved


def _time(
    message: query_service_pb2.EventFilter, name: Literal["start_time", "end_time"], field: str
) -> datetime | None:
    if not message.HasField(name):
        return None
    ts: Timestamp = getattr(message, name)
    if not (_MIN_SECONDS <= ts.seconds <= _MAX_SECONDS and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidArgumentError(
            f"{field}.{name}",
            f"({ts.seconds} s, {ts.nanos} ns) is not a timestamp between years 1 and 9999",
        )
    return timestamp_to_datetime(ts)
