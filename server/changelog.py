"""The records ingest appends to the write-ahead log, and how they are read back.

A record is a `protoevents.v1.ChangeLogRecord` (format 2): the outcome of one ingest batch,
decided once, so every writer and a restarted proxy see the same changes. Its first byte
tells it from a record of format 1, which a proxy still reads (a log written before the
upgrade drains through it):

    u8   format version (1)
    u8   field number of the events in CREATED: 1 or 2
    u32  length of CREATED (little endian)
    u32  length of UPDATED
    CREATED  the new events, the wire form of a message with `repeated Event events = N`
    UPDATED  the dedup updates, the wire form of `repeated Event events = 1`
    IDS      every event id the batch accepted, UTF-8, separated by "\\n"

tests/proxy/log/test_changelog.py pins both formats to stored golden bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.v1 import change_log_pb2, event_pb2, proxy_service_pb2

FORMAT = 2
_Record = change_log_pb2.ChangeLogRecord
_FORMAT_1_START = b"\x01"  # a record of format 1 starts with its version
_FORMAT_1_HEAD = struct.Struct("<BBII")
# The key of a `created` element: its field number, wire type 2 (length-delimited).
_CREATED_KEY = bytes([_Record.DESCRIPTOR.fields_by_name["created"].number << 3 | 2])


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [varint(n) for n in range(1 << 14)]


def _framed_created(serialized: Iterable[bytes]) -> bytes:
    """The `created` elements of a record, from events serialized already (dedup holds each
    new event's bytes; copying the events into a record to serialize them again costs three
    times as much)."""
    parts: list[bytes] = []
    append = parts.append
    small = _SMALL_VARINTS
    limit = len(small)
    key = _CREATED_KEY
    for data in serialized:
        n = len(data)
        append(key)
        append(small[n] if n < limit else varint(n))
        append(data)
    return b"".join(parts)


def encode(
    created: Iterable[bytes], updated: Iterable[event_pb2.Event], ids: Iterable[str]
) -> bytes:
    """One record from the serialized CREATED events, the UPDATED events and the accepted
    ids. It starts with its format (protobuf writes fields in number order), then the
    `created` elements, which a parser takes wherever they stand."""
    head = _Record(format=FORMAT, updated=updated, accepted_ids=ids).SerializeToString()
    return head + _framed_created(created)


def _read(payload: bytes) -> _Record:
    """The record in `payload`, of either format."""
    if payload[:1] == _FORMAT_1_START:
        return _read_format_1(payload)
    record = _Record.FromString(payload)
    if record.format != FORMAT:
        raise ValueError(f"change record of format {record.format}; this proxy reads 1 and 2")
    return record


def _read_format_1(payload: bytes) -> _Record:
    _, field, created_len, updated_len = _FORMAT_1_HEAD.unpack_from(payload)
    start = _FORMAT_1_HEAD.size
    middle = start + created_len
    end = middle + updated_len
    batch = proxy_service_pb2.RecordBatchRequest.FromString
    parse = batch if field == 1 else proxy_service_pb2.RecordRequest.FromString
    ids = payload[end:]
    return _Record(
        format=1,
        created=parse(payload[start:middle]).events,
        updated=batch(payload[middle:end]).events,
        accepted_ids=ids.decode().split("\n") if ids else [],
    )


def parse(payload: bytes) -> change_log_pb2.ChangeLogRecord:
    """The record in `payload`, of either format, as its message (format 1 converted)."""
    return _read(payload)


def decode(payload: bytes) -> list[Change]:
    """The changes of one record: its CREATED events, then its UPDATED ones."""
    record = _read(payload)
    changes = [Change(CREATED, event) for event in record.created]
    changes.extend(Change(UPDATED, event) for event in record.updated)
    return changes


def decode_ids(payload: bytes) -> list[str]:
    """The event ids a record accepted."""
    return list(_read(payload).accepted_ids)
