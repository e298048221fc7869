"""The write-ahead log's change records as the writer feeds share them: each read from the log
and decoded once, however many feeds take it, and kept until every feed has passed it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from protoevents.proxy import changelog
from protoevents.proxy.changes import Change
from protoevents.proxy.wal import HEADER, WriteAheadLog

DEFAULT_MAX_BYTES = 16 << 20  # about 50 records of 1,000 events: feeds within that share


class Record:
    """One change record of the log, from `start` to `end`; decoded on the first `changes`
    call, for every feed (the changes are shared: writers never modify them)."""

    __slots__ = ("_changes", "_payload", "end", "size", "start")

    def __init__(self, start: int, payload: bytes) -> None:
        self.start = start
        self.size = HEADER.size + len(payload)
        self.end = start + self.size
        self._payload = payload
        self._changes: list[Change] | None = None

    @property
    def decoded(self) -> bool:
        return self._changes is not None

    def changes(self) -> list[Change]:
        """The record's changes (CREATED, then UPDATED), decoded once."""
        if self._changes is None:
            self._changes = changelog.decode(self._payload)
            self._payload = b""  # the changes hold it all now
        return self._changes


class RecordCache:
    """Reads the log for feeds at any positions, each record once.

    A read from a position some record starts at takes the records already held from there
    (a feed that follows another reads what the other read); otherwise it reads the log, and
    a feed asking for the same position meanwhile waits for that read instead of making its
    own. A record is kept until every feed has passed its end (`low_water()`: the smallest
    position of the feeds, checked at `drop_passed`), and while the records held take at most
    `max_bytes` (log bytes, header included; past that the oldest are dropped, and a feed far
    behind reads them again from the log).
    """

    def __init__(
        self,
        wal: WriteAheadLog,
        low_water: Callable[[], int],
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"record cache max_bytes must be >= 1, not {max_bytes}")
        self.wal = wal
        self.low_water = low_water
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self.log_reads = 0  # reads that went to the log
        self._records: dict[int, Record] = {}  # start -> record
        self._reading: dict[int, asyncio.Task[tuple[list[Record], int]]] = {}

    def __len__(self) -> int:
        return len(self._records)

    async def read(self, position: int, max_bytes: int) -> tuple[list[Record], int]:
        """The records from `position`, about `max_bytes` of them (at least one when there
        is one), and the position after them: as `WriteAheadLog.read`, in records."""
        held = self._held_from(position, max_bytes)
        if held:
            return held, held[-1].end
        task = self._reading.get(position)
        if task is None:
            task = asyncio.ensure_future(self._read_log(position, max_bytes))
            self._reading[position] = task
            task.add_done_callback(lambda done: self._read_done(position, done))
        # Shielded: a feed cancelled while it waits does not cancel the read of the others.
        return await asyncio.shield(task)

    def _held_from(self, position: int, max_bytes: int) -> list[Record]:
        records = self._records
        found: list[Record] = []
        taken = 0
        record = records.get(position)
        while record is not None and (taken < max_bytes or not found):
            found.append(record)
            taken += record.size
            record = records.get(record.end)
        return found

    async def _read_log(self, position: int, max_bytes: int) -> tuple[list[Record], int]:
        located, end = await self.wal.read_records_async(position, max_bytes)
        self.log_reads += 1
        records = self._records
        found: list[Record] = []
        for start, payload in located:
            record = records.get(start)
            if record is None:  # another feed may have read it meanwhile, from elsewhere
                record = records[start] = Record(start, payload)
                self.held_bytes += record.size
            found.append(record)
        self._bound()
        return found, end

    def _read_done(self, position: int, task: asyncio.Task[tuple[list[Record], int]]) -> None:
        if self._reading.get(position) is task:
            del self._reading[position]
        if not task.cancelled():
            task.exception()  # retrieved: every waiting feed gets it raised

    def drop_passed(self) -> None:
        """Drop the records every feed has passed (a feed calls it when it moved on)."""
        mark = self.low_water()
        passed = [start for start, record in self._records.items() if record.end <= mark]
        for start in passed:
            self.held_bytes -= self._records.pop(start).size

    def _bound(self) -> None:
        """Drop the oldest records until the held ones fit in `max_bytes`."""
        if self.held_bytes <= self.max_bytes:
            return
        for start in sorted(self._records):
            self.held_bytes -= self._records.pop(start).size
            if self.held_bytes <= self.max_bytes:
                return
