"""The write-ahead log in tests: changes appended as the proxy logs them, read back, and the
records of a segment."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from protoevents.proxy import changelog
from protoevents.proxy.changes import Change
from protoevents.proxy.wal import HEADER, WriteAheadLog
from protoevents.v1 import event_pb2


async def append(
    wal: WriteAheadLog, created: Sequence[event_pb2.Event], updated: Sequence[event_pb2.Event] = ()
) -> None:
    ids = [e.id for e in created]
    await wal.append(changelog.encode([e.SerializeToString() for e in created], updated, ids))


async def logged_changes(wal: WriteAheadLog) -> list[Change]:
    changes: list[Change] = []
    for payload in await asyncio.to_thread(lambda: list(wal.scan())):
        changes.extend(changelog.decode(payload))
    return changes


def records_of(segment: Path) -> list[tuple[int, int]]:
    """(offset, length with header) of each record of a segment."""
    data = segment.read_bytes()
    found, offset = [], 0
    while offset < len(data):
        length, _ = HEADER.unpack_from(data, offset)
        found.append((offset, HEADER.size + length))
        offset += HEADER.size + length
    return found
