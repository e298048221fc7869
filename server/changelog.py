"""Encoding of the change records the ingest appends to the write-ahead log.

One record holds the outcome of one ingest batch, decided once (after validation,
idempotency and dedup), so every writer and a restarted proxy see the same changes:

    u8   format version (1)
    u8   field number of the events in CREATED: 1 or 2
    u32  length of CREATED (little endian)
    u32  length of UPDATED
    CREATED  the new events, as the wire form of a message with `repeated Event events = N`
             (N = 1: RecordBatchRequest; N = 2: RecordRequest, whose sequence is left out, so
             a batch accepted whole is logged as its request re-serialized, in one call)
    UPDATED  the dedup updates (one per first-event id, its latest state), wire form of
             `repeated Event events = 1`
    IDS      every event id the batch accepted, UTF-8, separated by "\\n" (the idempotency
             cache is rebuilt from these at start without parsing events)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from protoevents.proxy.changes import CREATED, UPDATED, Change
from protoevents.v1 import proxy_service_pb2

VERSION = 1
_HEAD = struct.Struct("<BBII")
_EVENTS_TAG = b"\x0a"  # field 1, length-delimited


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL_VARINTS = [_varint(n) for n in range(1 << 14)]


def encode_events(serialized: Iterable[bytes]) -> bytes:
    """The wire form of `repeated Event events = 1` from serialized events."""
    parts: list[bytes] = []
    append = parts.append
    small = _SMALL_VARINTS
    limit = len(small)
    for data in serialized:
        n = len(data)
        append(_EVENTS_TAG)
        append(small[n] if n < limit else _varint(n))
        append(data)
    return b"".join(parts)


def encode(created: Iterable[bytes], updated: Iterable[bytes], ids: Iterable[str]) -> bytes:
    """One record from serialized CREATED events, serialized UPDATED events and the ids."""
    return encode_blobs(1, encode_events(created), encode_events(updated), ids)


def encode_blobs(created_field: int, created: bytes, updated: bytes, ids: Iterable[str]) -> bytes:
    """One record from the CREATED blob (events as field `created_field`), the UPDATED blob
    and the ids."""
    ids_blob = "\n".join(ids).encode()
    head = _HEAD.pack(VERSION, created_field, len(created), len(updated))
    return b"".join((head, created, updated, ids_blob))


def _split(payload: bytes) -> tuple[int, bytes, bytes, bytes]:
    version, field, created_len, updated_len = _HEAD.unpack_from(payload)
    if version != VERSION:
        raise ValueError(f"change record of format {version}; this proxy reads {VERSION}")
    start = _HEAD.size
    middle = start + created_len
    end = middle + updated_len
    return field, payload[start:middle], payload[middle:end], payload[end:]


def decode(payload: bytes) -> list[Change]:
    """The changes of one record: its CREATED events, then its UPDATED ones."""
    field, created, updated, _ = _split(payload)
    batch = proxy_service_pb2.RecordBatchRequest.FromString
    parse = batch if field == 1 else proxy_service_pb2.RecordRequest.FromString
    changes = [Change(CREATED, event) for event in parse(created).events]
    if updated:
        changes.extend(Change(UPDATED, event) for event in batch(updated).events)
    return changes


def decode_ids(payload: bytes) -> list[str]:
    """The event ids a record accepted."""
    ids = _split(payload)[3]
    return ids.decode().split("\n") if ids else []
