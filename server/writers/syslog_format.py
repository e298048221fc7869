"""Syslog messages of changes: RFC 5424 (event fields as structured data) and RFC 3164."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import orjson
from google.protobuf import json_format, timestamp_pb2

from protoevents.proxy.changes import UPDATED, Change
from protoevents.v1 import event_pb2, severity_pb2

# Event severity -> syslog severity (RFC 5424 section 6.2.1).
SYSLOG_SEVERITY: dict[int, int] = {
    severity_pb2.SEVERITY_DEBUG: 7,  # Debug
    severity_pb2.SEVERITY_INFO: 6,  # Informational
    severity_pb2.SEVERITY_WARNING: 4,  # Warning
    severity_pb2.SEVERITY_ERROR: 3,  # Error
    severity_pb2.SEVERITY_CRITICAL: 2,  # Critical
}
NOTICE = 5  # an event without severity (the proxy always sets one)

NIL = "-"
BOM = b"\xef\xbb\xbf"
RFC3164_MAX_BYTES = 1024  # RFC 3164 section 4.1
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_SD_NAME_FORBIDDEN = frozenset('= ]"')


def priority(facility: int, severity: int) -> int:
    """PRI of a message: facility * 8 + the syslog severity of the event's severity."""
    return facility * 8 + SYSLOG_SEVERITY.get(severity, NOTICE)


def printable(text: str, limit: int) -> str:
    """`text` as a header field: printable US-ASCII (others become '_'), at most `limit`
    characters, NILVALUE when empty."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text[:limit])
    return cleaned or NIL


def sd_name(key: str) -> str:
    """An SD-NAME: 1 to 32 printable US-ASCII characters except '=', space, ']' and '"'."""
    cleaned = "".join(
        "_" if not 33 <= ord(c) <= 126 or c in _SD_NAME_FORBIDDEN else c for c in key[:32]
    )
    return cleaned or "_"


def escape_param(value: str) -> str:
    """A PARAM-VALUE: '"', '\\' and ']' escaped with a backslash (RFC 5424 section 6.3.3)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def rfc3339(stamp: timestamp_pb2.Timestamp) -> str:
    """UTC time with microseconds, such as 2026-01-01T00:00:00.000500Z; NILVALUE if unset."""
    if not stamp.seconds and not stamp.nanos:
        return NIL
    moment = dt.datetime.fromtimestamp(stamp.seconds, dt.UTC) + dt.timedelta(
        microseconds=stamp.nanos // 1000
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def occurred(event: event_pb2.Event) -> timestamp_pb2.Timestamp:
    """The time a message reports: the latest occurrence (for a new event, its time)."""
    return event.last_time if event.HasField("last_time") else event.time


def short_type(event: event_pb2.Event) -> str:
    """The event type's value name, such as CLUSTER_EVENT_TYPE_LEADER_ELECTED."""
    return event.type.rsplit(".", 1)[-1]


def object_path(ref: event_pb2.ObjectRef) -> str:
    """KIND/NAME or KIND/NAMESPACE/NAME; empty when the event has no object."""
    parts = [ref.kind, ref.namespace, ref.name] if ref.namespace else [ref.kind, ref.name]
    return "/".join(parts) if any(parts) else ""


def _params(pairs: list[tuple[str, str]]) -> str:
    return "".join(f' {name}="{escape_param(value)}"' for name, value in pairs if value)


@dataclass(frozen=True, slots=True)
class Rfc5424:
    """RFC 5424 messages: HOSTNAME is the source node, APP-NAME `app_name`, PROCID NIL,
    MSGID the type's value name (cut to 32 characters), the event's fields in the SD-ELEMENT
    `event@<enterprise_number>` and its attributes in `attributes@<enterprise_number>`, MSG
    the event message (UTF-8 with a BOM when not plain ASCII)."""

    facility: int
    app_name: str = "protoevents"
    enterprise_number: int = 32473

    def header(self, event: event_pb2.Event) -> str:
        return " ".join(
            (
                f"<{priority(self.facility, event.severity)}>1",
                rfc3339(occurred(event)),
                printable(event.source.node, 255),
                printable(self.app_name, 48),
                NIL,
                printable(short_type(event), 32),
            )
        )

    def structured_data(self, change: Change, *, data: bool = True, attributes: bool = True) -> str:
        event = change.event
        pairs = [
            ("id", event.id),
            ("change", "updated" if change.kind == UPDATED else "created"),
            ("type", event.type),
            ("severity", severity_pb2.Severity.Name(event.severity).removeprefix("SEVERITY_")),
            ("alert", "true" if event.alert else ""),
            ("category", event.category),
            ("site", event.site),
            ("node", event.source.node),
            ("component", event.source.component),
            ("object_kind", event.object.kind),
            ("object_namespace", event.object.namespace),
            ("object_name", event.object.name),
            ("count", str(event.count) if event.count else ""),
            ("time", rfc3339(event.time)),
            ("first_time", rfc3339(event.first_time) if event.HasField("first_time") else ""),
            ("last_time", rfc3339(event.last_time) if event.HasField("last_time") else ""),
        ]
        if data and event.data.fields:
            payload = orjson.dumps(
                json_format.MessageToDict(event.data), option=orjson.OPT_SORT_KEYS
            )
            pairs.append(("data", payload.decode()))
        text = f"[event@{self.enterprise_number}{_params(pairs)}]"
        if attributes and event.attributes:
            attrs = [(sd_name(k), v or "") for k, v in sorted(event.attributes.items())]
            text += f"[attributes@{self.enterprise_number}{_params(attrs)}]"
        return text

    def message(self, event: event_pb2.Event) -> bytes:
        encoded = event.message.encode()
        return encoded if event.message.isascii() else BOM + encoded

    def format(self, change: Change, max_bytes: int | None = None) -> bytes:
        """The message of `change`. Over `max_bytes` (UDP), MSG is shortened first; when the
        header and structured data alone are too long, `data` goes, then the attributes, then
        the structured data (RFC 5424 section 6.1: truncate at the end)."""
        header = self.header(change.event).encode()
        msg = self.message(change.event)
        variants = [
            {"data": True, "attributes": True},
            {"data": False, "attributes": True},
            {"data": False, "attributes": False},
        ]
        sds = [self.structured_data(change, **v).encode() for v in variants] + [NIL.encode()]
        for sd in sds:
            head = header + b" " + sd
            if max_bytes is None or len(head) + 1 + len(msg) <= max_bytes:
                return head + b" " + msg if msg else head
            room = max_bytes - len(head) - 1
            if room >= 0:
                return head + (b" " + cut(msg, room) if room else b"")
        return cut(header, max_bytes or len(header))


def cut(encoded: bytes, limit: int) -> bytes:
    """UTF-8 `encoded` cut to at most `limit` bytes on a character boundary."""
    if len(encoded) <= limit:
        return encoded
    return encoded[:limit].decode("utf-8", "ignore").encode()


@dataclass(frozen=True, slots=True)
class Rfc3164:
    """RFC 3164 (BSD) messages: `<PRI>Mmm dd hh:mm:ss HOST TAG: CONTENT`, the time in UTC
    (the format has no zone), HOST the source node, TAG `app_name` (cut to 32 characters),
    CONTENT `TYPE: message [id=... component=... object=... count=N]` (with alert=true and
    site=... when set)."""

    facility: int
    app_name: str = "protoevents"

    def format(self, change: Change, max_bytes: int | None = None) -> bytes:
        event = change.event
        stamp = occurred(event)
        moment = dt.datetime.fromtimestamp(stamp.seconds, dt.UTC)
        when = f"{_MONTHS[moment.month - 1]} {moment.day:2d} {moment:%H:%M:%S}"
        host = printable(event.source.node, 255)
        tag = printable(self.app_name, 32)
        details = [f"id={event.id}", f"component={event.source.component}"]
        if event.alert:
            details.append("alert=true")
        if event.site:
            details.append(f"site={event.site}")
        if path := object_path(event.object):
            details.append(f"object={path}")
        if event.count:
            details.append(f"count={event.count}")
        content = f"{short_type(event)}: {event.message} [{' '.join(details)}]"
        pri = priority(self.facility, event.severity)
        text = f"<{pri}>{when} {host} {tag}: {content}".encode()
        return text if max_bytes is None else cut(text, max_bytes)
