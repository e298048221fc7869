"""What the recorder puts on the wire: the queued form of an event, the Event built from it
once (in the delivery thread, off the caller's), and the bytes of a batch's RecordRequest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from google.protobuf import struct_pb2

from protoevents.recorder.registry import EventType
from protoevents.v1 import event_pb2, proxy_service_pb2

HEADER_BYTES = 16  # at most: a RecordRequest's sequence field, prepended to each batch

# What record() enqueues: id, type, message, severity, object, attributes, data, time (ns),
# and whether the event asks for an alert.
Item = tuple[
    str,
    EventType,
    str,
    int,
    event_pb2.ObjectRef | None,
    Mapping[str, str] | None,
    struct_pb2.Struct | None,
    int,
    bool,
]


def field_bytes(event: event_pb2.Event) -> int:
    """Bytes of `event` as one `events` entry of a RecordRequest: tag, length, event."""
    size = event.ByteSize()
    return 1 + (size.bit_length() + 6) // 7 + size


def build_event(item: Item, source: event_pb2.EventSource) -> event_pb2.Event:
    """The Event message of a queued item."""
    event_id, event_type, message, severity, obj, attributes, data, time_ns, alert = item
    event = event_pb2.Event(
        id=event_id,
        type=event_type.name,
        severity=severity,  # type: ignore[arg-type]
        category=event_type.category,
        message=message,
        source=source,
        object=obj,
        attributes=attributes,
        data=data,
        alert=alert,
    )
    event.time.FromNanoseconds(time_ns)
    return event


def batch_payload(events: Sequence[event_pb2.Event]) -> bytes:
    """A batch as the proxy takes it (and the spool keeps it): a RecordRequest of `events`,
    without its sequence, which `batch_header` prepends per send."""
    return proxy_service_pb2.RecordRequest(events=events).SerializeToString()


def batch_header(sequence: int) -> bytes:
    """The sequence field that, prepended to a payload, makes the RecordRequest of a send."""
    return proxy_service_pb2.RecordRequest(sequence=sequence).SerializeToString()


def events_of(payload: bytes) -> Sequence[event_pb2.Event]:
    """The events of a batch payload (to sort out what the proxy refused of it)."""
    return proxy_service_pb2.RecordRequest.FromString(payload).events
