"""Checks of incoming events against the registry and the size and time limits."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

from google.protobuf import struct_pb2

from protoevents.proxy import ids
from protoevents.proxy.fields import FIELD_LIMITS
from protoevents.recorder.registry import SEVERITY_VALUES, EventType, Registry
from protoevents.v1 import event_pb2, proxy_service_pb2

Reason: TypeAlias = proxy_service_pb2.RejectionReason.ValueType
Problem: TypeAlias = tuple[Reason, str]

MISSING_TYPE = proxy_service_pb2.REJECTION_REASON_MISSING_TYPE
UNKNOWN_TYPE = proxy_service_pb2.REJECTION_REASON_UNKNOWN_TYPE
INVALID_ID = proxy_service_pb2.REJECTION_REASON_INVALID_ID
MISSING_SOURCE = proxy_service_pb2.REJECTION_REASON_MISSING_SOURCE
TIME_OUT_OF_RANGE = proxy_service_pb2.REJECTION_REASON_TIME_OUT_OF_RANGE
FIELD_TOO_LARGE = proxy_service_pb2.REJECTION_REASON_FIELD_TOO_LARGE
INVALID_SEVERITY = proxy_service_pb2.REJECTION_REASON_INVALID_SEVERITY
INVALID_VALUE = proxy_service_pb2.REJECTION_REASON_INVALID_VALUE

EARLIEST_SECONDS = int(datetime(2001, 1, 1, tzinfo=UTC).timestamp())
_CANONICAL_ID = ids.CANONICAL  # checked inline: the id check is on every event
# A qualified event-type name: package, enum and value, each a protobuf identifier.
_QUALIFIED_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*){2,}")
_MAX_NANOS = 999_999_999
# Value.number_value on the wire: tag 0x11, then a little-endian double; NaN and the
# infinities have every exponent bit set (the top 12 bits but the sign).
_NON_FINITE_DOUBLE = re.compile(rb"\x11[\x00-\xff]{6}[\xf0-\xff][\x7f\xff]")
# Characters each bounded column holds (PostgreSQL refuses longer text, whatever its bytes).
_COLUMN_CHARS = (
    ("source.node", FIELD_LIMITS["source_node"]),
    ("source.component", FIELD_LIMITS["source_component"]),
    ("object.kind", FIELD_LIMITS["object_kind"]),
    ("object.namespace", FIELD_LIMITS["object_namespace"]),
    ("object.name", FIELD_LIMITS["object_name"]),
)


@dataclass(frozen=True, slots=True)
class UnknownType:
    """An event good in every respect but its type: a well-formed qualified name (package,
    enum, value) that the registry does not know, from newer protos. Ingest quarantines it."""

    detail: str
    size: int  # serialized, as for a good event


def quarantinable(type_name: str) -> bool:
    """Whether an unknown type name may be one of newer protos: a qualified name that fits
    the type column and is not a zero value (`*_UNSPECIFIED`, never an event type)."""
    return (
        len(type_name) <= FIELD_LIMITS["type"]
        and not type_name.endswith("_UNSPECIFIED")
        and _QUALIFIED_TYPE.fullmatch(type_name) is not None
    )


class MalformedBatchError(ValueError):
    """The batch as a whole is malformed (empty, or more events than the limit)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size and time bounds of one event."""

    max_batch_events: int = 10_000
    max_message_bytes: int = 4096
    max_attributes: int = 64
    max_attribute_bytes: int = 1024
    max_data_bytes: int = 65536
    max_field_bytes: int = 1024
    max_future_s: float = 3600.0


def _utf8_len_over(text: str, limit: int) -> bool:
    """Whether `text` takes more than `limit` bytes in UTF-8 (encoding only when it may)."""
    n = len(text)
    return n > limit or (n * 4 > limit and len(text.encode()) > limit)


_SHORTEST_COLUMN = min(limit for _, limit in _COLUMN_CHARS)


def _over_column(node: str, component: str, event: event_pb2.Event) -> str | None:
    """The source or object field longer than its database column, named with the limit."""
    obj = event.object
    values = (node, component, obj.kind, obj.namespace, obj.name)
    for (name, limit), value in zip(_COLUMN_CHARS, values, strict=True):
        if len(value) > limit:
            return f"{name} exceeds {limit} characters"
    return None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 64 else text[:64] + "...")


def _nul_field(message: str, node: str, component: str, event: event_pb2.Event) -> str | None:
    """The string field holding a NUL character (PostgreSQL text cannot), if any."""
    if "\x00" in message:
        return "message"
    if "\x00" in node:
        return "source.node"
    if "\x00" in component:
        return "source.component"
    if event.HasField("object"):
        obj = event.object
        for name, value in (("kind", obj.kind), ("namespace", obj.namespace), ("name", obj.name)):
            if "\x00" in value:
                return f"object.{name}"
    attributes = event.attributes
    if attributes:
        for key, value in attributes.items():
            if "\x00" in key or "\x00" in value:
                return f"attributes[{_shown(key)}]"
    return None


def _bad_data(struct: struct_pb2.Struct) -> str | None:
    """Why `data` cannot be stored as JSON (a NUL character, NaN or an infinity), if it cannot.

    Walking a Struct is slow: its wire form is searched first for what either would leave
    there (a zero byte; a double whose exponent bits are all set), and walked only on a hit.
    """
    wire = struct.SerializeToString()
    if b"\x00" not in wire and _NON_FINITE_DOUBLE.search(wire) is None:
        return None
    found = _find_bad(struct.fields.items())
    if found is None:
        return None
    path, problem = found
    return "data" + "".join(reversed(path)) + problem


_Found: TypeAlias = tuple[list[str], str]  # the path to the bad value, innermost first


def _find_bad(items: Iterable[tuple[str | int, struct_pb2.Value]]) -> _Found | None:
    """The first bad value among `items` (keys or list indexes), fast when there is none."""
    for key, value in items:
        found: _Found | None = None
        kind = value.WhichOneof("kind")
        if kind == "string_value":
            if "\x00" in value.string_value:
                found = [], " holds a NUL character"
        elif kind == "number_value":
            number = value.number_value
            if not math.isfinite(number):
                found = [], f" is {number}: JSON has no NaN or infinity"
        elif kind == "struct_value":
            found = _find_bad(value.struct_value.fields.items())
        elif kind == "list_value":
            found = _find_bad(enumerate(value.list_value.values))
        if found is None and isinstance(key, str) and "\x00" in key:
            found = [], ": the key holds a NUL character"
        if found is not None:
            found[0].append(f"[{_shown(key)}]" if isinstance(key, str) else f"[{key}]")
            return found
    return None


def _iso(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat()
    except (OverflowError, OSError, ValueError):
        return f"{seconds} s since the epoch"


class Validator:
    """Checks events one by one and completes the accepted ones from their type.

    `check` returns None for a good event, after filling in its category and, when it is
    unspecified, its severity from the type's declaration; or a (reason, detail) pair naming
    the field at fault and the limit or value.
    """

    def __init__(self, registry: Registry, limits: Limits | None = None) -> None:
        self.registry = registry
        self.limits = limits or Limits()
        self._enums = set(registry.enum_names)
        # An event no bigger than this, serialized, cannot break a size limit (but the
        # attribute count): every field is smaller than the whole.
        self._small = min(
            self.limits.max_field_bytes,
            self.limits.max_message_bytes,
            self.limits.max_attribute_bytes,
            self.limits.max_data_bytes,
        )

    def check_batch(self, count: int) -> None:
        """Raise MalformedBatchError when a batch of `count` events is malformed."""
        if count == 0:
            raise MalformedBatchError("the batch has no events")
        if count > self.limits.max_batch_events:
            raise MalformedBatchError(
                f"the batch has {count} events; the limit is {self.limits.max_batch_events}"
            )

    def check(self, event: event_pb2.Event, now: float | None = None) -> Problem | None:
        outcome = self.inspect(event, now)
        if isinstance(outcome, UnknownType):
            return UNKNOWN_TYPE, outcome.detail
        return None if isinstance(outcome, int) else outcome

    def inspect(
        self, event: event_pb2.Event, now: float | None = None, *, forwarded: bool = False
    ) -> Problem | int | UnknownType:
        """Like `check`, but a good event gives its serialized size (before completion), and
        one whose only fault is a type of newer protos gives an UnknownType. A `forwarded`
        event (from another proxy, which checked its time against its own clock when it took
        it) may have a site and any time since EARLIEST; a recorded one may have no site."""
        limits = self.limits
        field_limit = limits.max_field_bytes
        event_id = event.id
        if len(event_id) != 36 or _CANONICAL_ID.fullmatch(event_id) is None:
            return INVALID_ID, ids.id_problem(event_id) or "id is not canonical"
        if forwarded:
            now = math.inf
        elif event.site:
            return INVALID_VALUE, (
                "site is set only by a proxy that receives the event forwarded from a site; "
                "recorders leave it empty"
            )
        type_name = event.type
        if not type_name:
            return MISSING_TYPE, "type is empty"
        event_type = self.registry.get(type_name)
        if event_type is None:
            known = self._type_of(event, type_name)
            if isinstance(known, tuple):
                return known
            event_type = known
        source = event.source
        node = source.node
        component = source.component
        if not node:
            return MISSING_SOURCE, "source.node is empty"
        if not component:
            return MISSING_SOURCE, "source.component is empty"
        if not event.HasField("time"):
            return TIME_OUT_OF_RANGE, "time is not set"
        seconds = event.time.seconds
        nanos = event.time.nanos
        if not 0 <= nanos <= _MAX_NANOS or not EARLIEST_SECONDS <= seconds <= self._latest(now):
            return TIME_OUT_OF_RANGE, self._time_detail(seconds, nanos, now)
        severity = event.severity
        if severity not in SEVERITY_VALUES:
            if severity:
                return INVALID_SEVERITY, f"severity {severity} is not a defined Severity value"
            if event_type is not None:
                event.severity = event_type.severity  # type: ignore[assignment]
        if len(event.attributes) > limits.max_attributes:
            return (
                FIELD_TOO_LARGE,
                f"attributes has {len(event.attributes)} entries; "
                f"the limit is {limits.max_attributes}",
            )
        size: int = event.ByteSize()
        if size > _SHORTEST_COLUMN:
            too_long = _over_column(node, component, event)
            if too_long is not None:
                return FIELD_TOO_LARGE, too_long
        if size > self._small:
            too_large = self._too_large(event, node, component, field_limit)
            if too_large is not None:
                return FIELD_TOO_LARGE, too_large
        nul = _nul_field(event.message, node, component, event)
        if nul is not None:
            return INVALID_VALUE, f"{nul} holds a NUL character"
        if event.HasField("data"):
            bad = _bad_data(event.data)
            if bad is not None:
                return INVALID_VALUE, bad
        if event_type is None:
            return UnknownType(self._unknown_detail(type_name), size)
        event.category = event_type.category
        return size

    def _type_of(self, event: event_pb2.Event, type_name: str) -> EventType | Problem | None:
        """The type of a name the registry does not hold as is: a value name alone
        (CLUSTER_EVENT_TYPE_LEADER_ELECTED, as grpcurl users write it) is stored under its
        qualified name when it names one type; None for a name of newer protos (quarantined)."""
        if "." not in type_name:
            try:
                event_type = self.registry.lookup(type_name)
            except KeyError as unknown:
                return UNKNOWN_TYPE, self._unknown_detail(type_name, str(unknown.args[0]))
            event.type = event_type.name
            return event_type
        if not quarantinable(type_name):
            return UNKNOWN_TYPE, self._unknown_detail(type_name)
        return None

    def _latest(self, now: float | None) -> float:
        """The latest event time accepted: `max_future_s` after the proxy's clock."""
        return (time.time() if now is None else now) + self.limits.max_future_s

    def _time_detail(self, seconds: int, nanos: int, now: float | None) -> str:
        if not 0 <= nanos <= _MAX_NANOS:
            return f"time.nanos {nanos} is outside 0..{_MAX_NANOS}"
        if seconds < EARLIEST_SECONDS:
            return f"time {_iso(seconds)} is before 2001-01-01 (clock not set?)"
        clock = time.time() if now is None else now
        return (
            f"time {_iso(seconds)} is more than {self.limits.max_future_s:g} s after the "
            f"proxy's clock ({_iso(int(clock))})"
        )

    def _too_large(
        self, event: event_pb2.Event, node: str, component: str, field_limit: int
    ) -> str | None:
        limits = self.limits
        if _utf8_len_over(event.message, limits.max_message_bytes):
            return f"message exceeds {limits.max_message_bytes} bytes"
        if _utf8_len_over(node, field_limit):
            return f"source.node exceeds {field_limit} bytes"
        if _utf8_len_over(component, field_limit):
            return f"source.component exceeds {field_limit} bytes"
        if event.HasField("object"):
            obj = event.object
            for name, value in (
                ("object.kind", obj.kind),
                ("object.namespace", obj.namespace),
                ("object.name", obj.name),
            ):
                if _utf8_len_over(value, field_limit):
                    return f"{name} exceeds {field_limit} bytes"
        attributes = event.attributes
        if attributes:
            for key, value in attributes.items():
                if _utf8_len_over(key + value, limits.max_attribute_bytes):
                    shown = key if len(key) <= 64 else key[:64] + "..."
                    return (
                        f"attributes[{shown!r}] key and value exceed "
                        f"{limits.max_attribute_bytes} bytes"
                    )
        if event.HasField("data"):
            size = event.data.ByteSize()
            if size > limits.max_data_bytes:
                return f"data is {size} bytes serialized; the limit is {limits.max_data_bytes}"
        return None

    def _unknown_detail(self, type_name: str, lookup: str = "") -> str:
        enum_name, _, value = type_name.rpartition(".")
        if enum_name in self._enums and value.endswith("_UNSPECIFIED"):
            return f"type {type_name!r} is the zero value of {enum_name}, not an event type"
        if "ambiguous" in lookup:
            return f"{lookup}: give the qualified name"
        shown = type_name if len(type_name) <= 200 else type_name[:200] + "..."
        return f"type {shown!r} is not a known event type"
