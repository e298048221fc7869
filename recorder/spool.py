"""The on-disk spool: an ordered, size-capped queue of serialized batches awaiting the proxy.

A spool is a folder of numbered segment files. Each segment holds records
`magic | payload length | event count | crc32 | payload`, appended in order. Records are read
oldest first and a segment file is deleted once every record in it is acknowledged, so a crash
at any point loses nothing that was appended (replays may repeat acknowledged records; the
proxy is idempotent by event id). Past the size cap the oldest segments are deleted and their
events counted as dropped. A damaged record ends its segment: what precedes it is kept.

Why not the proxy's write-ahead log (server/wal.py), which is also CRC-checked records in
segment files: the spool is a queue with one consumer, inside the component that embeds the
recorder, driven by one thread with no event loop; it deletes what is acknowledged, drops the
oldest past its cap (counted), and keeps each record's event count for that. The log keeps
records for many readers at their own positions, commits groups from an event loop, never drops
(it refuses at its cap) and resynchronises past damage. They share `protoevents.recorder.files`.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from protoevents.recorder.errors import SpoolInUseError
from protoevents.recorder.files import fsync_dir, write_all

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<IIII")
_MAGIC = 0x50455631  # "PEV1"
_SUFFIX = ".spool"
_TEMPORARY = ".compacting"  # a segment being rewritten, before its rename
MAX_SLOTS = 64


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    records: list[tuple[int, int, int]] = field(default_factory=list)  # offset, length, count
    size: int = 0
    acked: int = 0

    @property
    def unacked_events(self) -> int:
        return sum(count for _, _, count in self.records[self.acked :])


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """One record handed out for sending; give it back to `acknowledge`."""

    segment: int
    index: int
    payload: bytes
    count: int


class Spool:
    """Ordered on-disk queue of batches with a size cap (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 1 << 20,
        fsync: bool = True,
        *,
        repair: bool = True,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = max(4096, min(segment_bytes, max_bytes // 4 or 4096))
        self.fsync = fsync
        self.repair = repair  # False: read only, a damaged or empty file is left as it is
        self.dropped_events = 0
        self.damaged_segments = 0
        self._segments: deque[_Segment] = deque()
        self._cursor: tuple[int, int] | None = None  # (segment number, record index) to read next
        self._writer: int | None = None
        self._sealed = False  # the last segment has a torn tail: append to a new one
        if repair:
            directory.mkdir(parents=True, exist_ok=True)
        if directory.is_dir():
            self._recover()

    # -- state ---------------------------------------------------------------------------

    @property
    def pending_events(self) -> int:
        """Events appended and not yet acknowledged."""
        return sum(s.unacked_events for s in self._segments)

    @property
    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def has_unread(self) -> bool:
        return self._locate_cursor() is not None

    def is_empty(self) -> bool:
        return all(s.acked == len(s.records) for s in self._segments)

    # -- writing -------------------------------------------------------------------------

    def append(self, payload: bytes, count: int) -> int:
        """Append one batch of `count` events; returns how many old events the cap dropped."""
        record = _HEADER.pack(_MAGIC, len(payload), count, zlib.crc32(payload)) + payload
        active = self._segments[-1] if self._segments else None
        full = active is not None and active.size + len(record) > self.segment_bytes
        if active is None or self._sealed or (full and active.records):
            active = self._new_segment()
        fd = self._writer_fd(active)
        try:
            write_all(fd, record)
            if self.fsync:
                os.fsync(fd)
        except OSError:
            # A full disk, a file-size limit or an I/O error: leave no torn record behind.
            self._truncate_back(active)
            raise
        active.records.append((active.size + _HEADER.size, len(payload), count))
        active.size += len(record)
        return self._enforce_cap()

    def _truncate_back(self, segment: _Segment) -> None:
        """Cut `segment` back to its last whole record (after a failed append)."""
        try:
            os.ftruncate(self._writer_fd(segment), segment.size)
        except OSError:
            # The file keeps a torn tail, which the next open cuts (see `_scan`); later
            # appends go to a new segment so that they do not land after it.
            self._sealed = True
            log.warning("could not cut %s back to %d bytes", segment.path, segment.size)

    def _new_segment(self) -> _Segment:
        self._close_writer()
        number = self._segments[-1].number + 1 if self._segments else 1
        segment = _Segment(number, self.directory / f"{number:012d}{_SUFFIX}")
        segment.path.touch()
        if self.fsync:
            fsync_dir(self.directory)
        self._segments.append(segment)
        self._sealed = False
        return segment

    def _writer_fd(self, segment: _Segment) -> int:
        if self._writer is None:
            self._writer = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return self._writer

    def _close_writer(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None

    def _enforce_cap(self) -> int:
        dropped = 0
        while self.size_bytes > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments[0]
            if self._in_flight(oldest):
                break  # deleting records that are being delivered would make counts inexact
            dropped += oldest.unacked_events
            self._delete(oldest)
        self.dropped_events += dropped
        return dropped

    def _in_flight(self, segment: _Segment) -> bool:
        if self._cursor is None:
            return False
        number, index = self._cursor
        if segment.number < number:
            return segment.acked < len(segment.records)
        return segment.number == number and segment.acked < index

    # -- reading -------------------------------------------------------------------------

    def _locate_cursor(self) -> tuple[_Segment, int] | None:
        for segment in self._segments:
            start = segment.acked
            if self._cursor is not None:
                if segment.number < self._cursor[0]:
                    continue
                if segment.number == self._cursor[0]:
                    start = max(start, self._cursor[1])
            if start < len(segment.records):
                return segment, start
        return None

    def next_unread(self) -> SpoolEntry | None:
        """The oldest record not yet handed out since the last rewind, or None."""
        found = self._locate_cursor()
        if found is None:
            return None
        segment, index = found
        offset, length, count = segment.records[index]
        with segment.path.open("rb") as handle:
            handle.seek(offset)
            payload = handle.read(length)
        self._cursor = (segment.number, index + 1)
        return SpoolEntry(segment.number, index, payload, count)

    def acknowledge(self, entry: SpoolEntry) -> None:
        """Mark a handed-out record as delivered; deletes its segment once all are."""
        for segment in self._segments:
            if segment.number == entry.segment:
                segment.acked = max(segment.acked, entry.index + 1)
                if segment.acked == len(segment.records):
                    self._delete(segment)
                return

    def rewind(self) -> None:
        """Hand out again every record not acknowledged (after a failed delivery)."""
        self._cursor = None

    def seal(self) -> None:
        """Start the next append on a new segment."""
        self._close_writer()
        self._sealed = True

    def compact(self) -> None:
        """Make the acknowledgements of a segment only partly acknowledged last: rewrite it
        with the rest of its records alone. Acknowledgements are otherwise kept in memory
        only, and a segment file is deleted once all of it is acknowledged, so after a reopen
        its acknowledged records would be handed out again. Each file is replaced whole (a
        rename); when that fails the segment is left as it was (its records would then be
        handed out again after a reopen, never lost). Rewinds the cursor."""
        self.rewind()
        for segment in self._segments:
            if 0 < segment.acked < len(segment.records):
                try:
                    self._rewrite(segment)
                except OSError as exc:
                    log.warning("could not compact spool segment %s: %s", segment.path, exc)

    def _rewrite(self, segment: _Segment) -> None:
        if segment is self._segments[-1]:
            self._close_writer()  # the next append opens the new file
        data = segment.path.read_bytes()
        kept = bytearray()
        records: list[tuple[int, int, int]] = []
        for offset, length, count in segment.records[segment.acked :]:
            records.append((len(kept) + _HEADER.size, length, count))
            kept += data[offset - _HEADER.size : offset + length]
        temporary = segment.path.with_name(segment.path.name + _TEMPORARY)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, bytes(kept))
            if self.fsync:
                os.fsync(fd)
        except OSError:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(temporary, segment.path)
        if self.fsync:
            fsync_dir(self.directory)
        segment.records, segment.size, segment.acked = records, len(kept), 0

    # -- lifecycle -----------------------------------------------------------------------

    def _delete(self, segment: _Segment) -> None:
        if segment is self._segments[-1]:
            self._close_writer()
        self._segments.remove(segment)
        segment.path.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_writer()
        for segment in list(self._segments):
            if segment.acked == len(segment.records):
                self._delete(segment)

    def _recover(self) -> None:
        if self.repair:  # a rewrite a crash interrupted: the segment it was made from is whole
            for left in self.directory.glob(f"*{_SUFFIX}{_TEMPORARY}"):
                left.unlink(missing_ok=True)
        for path in sorted(self.directory.glob(f"*{_SUFFIX}")):
            try:
                number = int(path.stem)
            except ValueError:
                continue
            segment = _Segment(number, path)
            self._scan(segment)
            if segment.records:
                self._segments.append(segment)
            elif self.repair:
                path.unlink(missing_ok=True)

    def _scan(self, segment: _Segment) -> None:
        data = segment.path.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            magic, length, count, crc = _HEADER.unpack_from(data, offset)
            start = offset + _HEADER.size
            payload = data[start : start + length]
            if magic != _MAGIC or len(payload) != length or zlib.crc32(payload) != crc:
                break
            segment.records.append((start, length, count))
            offset = start + length
        segment.size = offset
        if offset < len(data):
            self.damaged_segments += 1
            log.warning(
                "spool segment %s is damaged at byte %d of %d: kept the %d records before it",
                segment.path,
                offset,
                len(data),
                len(segment.records),
            )
            if self.repair:
                with segment.path.open("r+b") as handle:
                    handle.truncate(offset)


class SpoolSlot:
    """An exclusive sub-folder of a spool folder, held with an advisory lock.

    One recorder per component and host takes slot 0 and so finds its own spool again after a
    restart; a second live recorder (or a forked child) takes the next free slot.
    """

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True)
        for slot in range(MAX_SLOTS):
            directory = base / f"slot-{slot}"
            directory.mkdir(exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.directory = directory
            self._fd: int | None = fd
            return
        raise SpoolInUseError(
            f"all {MAX_SLOTS} spool slots under {base} are held by live recorders"
        )

    def release(self) -> None:
        """Release the slot. In a forked child this only closes the inherited descriptor: the
        parent, which holds the same lock, keeps it."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
