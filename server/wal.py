"""The write-ahead log: CRC-checked records in segment files, group commit, per-reader bookmarks.

Layout of the log folder:

- `NNNNNNNNNNNNNNNNNNNN.wal`: a segment; the name is the log position of its first byte
  (20 decimal digits). A record never spans two segments.
- `bookmarks/NAME`: the position up to which the reader NAME has consumed the log (decimal
  text, replaced atomically by write + fsync + rename).

A record is an 8-byte header, `length` (u32, little endian) and `crc32(payload)` (u32), then
`length` payload bytes. Positions are byte offsets in the whole log, so a position names a
record in a segment without an index. On open, each segment is scanned and cut at the first
record that is incomplete or fails its CRC (a write torn by a crash); everything before it is
kept. Records are visible to readers only once appended under the fsync policy.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import logging
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30
_SEGMENT = re.compile(r"^(\d{20})\.wal$")
_READER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_ROOM_RETRY_MAX_S = 1.0


class LogFull(Exception):  # noqa: N818 - the name says what the caller must handle
    """Appending would take the log over its size cap; nothing was appended."""


class LogCorrupt(Exception):  # noqa: N818
    """A record in the middle of the log fails its check."""


class _DiskFullError(Exception):
    """The file system refused a write for want of space; `written` records went in whole
    before it (the torn rest was cut off)."""

    def __init__(self, written: int, error: OSError) -> None:
        super().__init__(str(error))
        self.written = written
        self.error = error


@dataclass(slots=True)
class _Segment:
    start: int
    path: Path
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def _segment_path(directory: Path, start: int) -> Path:
    return directory / f"{start:020d}.wal"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _valid_prefix(path: Path) -> tuple[int, int]:
    """(bytes of whole valid records at the start of the file, number of those records)."""
    good = 0
    count = 0
    with path.open("rb") as handle:
        data = handle.read()
    size = len(data)
    while good + HEADER.size <= size:
        length, crc = HEADER.unpack_from(data, good)
        end = good + HEADER.size + length
        if length > MAX_RECORD_BYTES or end > size:
            break
        if zlib.crc32(data[good + HEADER.size : end]) != crc:
            break
        good = end
        count += 1
    return good, count


def frame(payload: bytes) -> bytes:
    """A payload with its record header."""
    return HEADER.pack(len(payload), zlib.crc32(payload)) + payload


class WriteAheadLog:
    """An append-only log with group commit. Create with `await WriteAheadLog.open(...)`.

    `submit` is synchronous (it reserves the record's position and checks the cap, so the
    order of calls is the order in the log) and returns a future that completes, with the
    position after the record, once the record is written and, under fsync="batch", fsynced.
    Records submitted while a write is in progress are written together with one write and one
    fsync. File I/O runs on a dedicated thread, never on the event loop.
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        max_bytes: int,
        fsync: str = "batch",
        fsync_interval_s: float = 0.05,
    ) -> None:
        if fsync not in ("batch", "interval", "off"):
            raise ValueError(f"fsync policy {fsync!r}: expected batch, interval or off")
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes
        self.fsync_policy = fsync
        self.fsync_interval_s = fsync_interval_s
        self._segments: list[_Segment] = []
        self._bookmarks: dict[str, int] = {}
        self._readers: set[str] = set()
        self._barriers: list[tuple[int, asyncio.Future[int]]] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-append")
        self._file: int | None = None  # fd of the last segment, opened for appending
        self._pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self._reserved_end = 0  # position after the last submitted record
        self._visible_end = 0  # position after the last record readers may see
        self._unsynced = False
        self._wake = asyncio.Event()
        self._advanced = asyncio.Event()
        self._closing = False
        self._failed: BaseException | None = None
        self._disk_full: OSError | None = None  # set while a group waits for room on disk
        self._room = asyncio.Event()  # set when segments were deleted
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.fsyncs = 0
        self.bytes_written = 0
        self.recovered_truncated_bytes = 0
        self.on_fsync: Callable[[int], None] | None = None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        segment_bytes: int = 64 << 20,
        max_bytes: int = 4 << 30,
        fsync: str = "batch",
        fsync_interval_s: float = 0.05,
    ) -> WriteAheadLog:
        """Open (creating) the log in `directory`, cutting torn tails off its segments."""
        wal = cls(
            directory,
            segment_bytes=segment_bytes,
            max_bytes=max_bytes,
            fsync=fsync,
            fsync_interval_s=fsync_interval_s,
        )
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(wal._io, wal._recover)
        wal._flusher = asyncio.create_task(wal._flush_loop(), name="wal-flusher")
        if fsync == "interval":
            wal._ticker = asyncio.create_task(wal._tick_loop(), name="wal-fsync-interval")
        return wal

    def _recover(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "bookmarks").mkdir(exist_ok=True)
        for path in sorted(self.directory.iterdir()):
            match = _SEGMENT.match(path.name)
            if not match:
                continue
            good, _ = _valid_prefix(path)
            size = path.stat().st_size
            if good < size:
                log.warning(
                    "write-ahead log %s: cut %d bytes of a torn or corrupt tail at offset %d",
                    path.name,
                    size - good,
                    good,
                )
                with path.open("r+b") as handle:
                    handle.truncate(good)
                    os.fsync(handle.fileno())
                self.recovered_truncated_bytes += size - good
            self._segments.append(_Segment(int(match.group(1)), path, good))
        for path in (self.directory / "bookmarks").iterdir():
            if _READER_NAME.match(path.name):
                with contextlib.suppress(ValueError):
                    self._bookmarks[path.name] = int(path.read_text().strip())
        if not self._segments:
            self._segments.append(_Segment(0, _segment_path(self.directory, 0), 0))
            _segment_path(self.directory, 0).touch()
            _fsync_dir(self.directory)
        last = self._segments[-1]
        self._file = os.open(last.path, os.O_WRONLY | os.O_APPEND)
        self._reserved_end = self._visible_end = last.end
        for name, position in self._bookmarks.items():
            # A bookmark past the end (a tail lost with fsync=off) would skip new records.
            self._bookmarks[name] = min(position, last.end)

    # -- appending -----------------------------------------------------------------------

    @property
    def start(self) -> int:
        """Position of the oldest retained byte."""
        return self._segments[0].start

    @property
    def end(self) -> int:
        """Position after the last record readers may see."""
        return self._visible_end

    @property
    def size(self) -> int:
        """Bytes retained on disk plus bytes submitted and not yet written."""
        return self._reserved_end - self._segments[0].start

    def free_bytes(self) -> int:
        """Bytes that may still be submitted (none while the disk is full)."""
        return 0 if self._disk_full is not None else self.max_bytes - self.size

    def full_message(self) -> str:
        """Why the log takes no more records: its disk or its size cap is full."""
        if self._disk_full is not None:
            return (
                f"the disk of the write-ahead log is full ({self._disk_full.strerror}): "
                "a writer is behind; retry later"
            )
        return (
            f"write-ahead log is full ({self.size} of {self.max_bytes} bytes used): "
            "a writer is behind; retry later"
        )

    def submit(self, payload: bytes) -> asyncio.Future[int]:
        """Queue one record; the future gives the position after it once it is persisted.

        Raises LogFull, appending nothing, when the record would exceed the size cap.
        """
        if self._closing:
            raise RuntimeError("the write-ahead log is closed")
        if self._failed is not None:
            raise RuntimeError("the write-ahead log failed") from self._failed
        record = frame(payload)
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        if self._disk_full is not None or self.size + len(record) > self.max_bytes:
            raise LogFull(self.full_message())
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._reserved_end += len(record)
        self._wake.set()
        return future

    def barrier(self) -> asyncio.Future[int]:
        """A future that completes once every record submitted so far is persisted."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._reserved_end == self._visible_end or self._failed is not None:
            future.set_result(self._visible_end)
        else:
            self._barriers.append((self._reserved_end, future))
        return future

    async def append(self, payload: bytes) -> int:
        """Append one record; returns the position after it once it is persisted."""
        return await self.submit(payload)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            group, self._pending = self._pending, []
            sync = self.fsync_policy == "batch"
            try:
                end = await self._write_until_room(loop, group, sync)
            except LogFull as exc:  # closing while the disk is full: nothing is acknowledged
                for _, future in group + self._pending + self._barriers:
                    if not future.done():
                        future.set_exception(LogFull(str(exc)))
                self._pending, self._barriers = [], []
                return
            except BaseException as exc:  # an I/O error: nothing after it can be trusted
                log.exception("write-ahead log: append failed")
                self._failed = exc
                for _, future in group + self._pending + self._barriers:
                    if not future.done():
                        future.set_exception(RuntimeError(f"write-ahead log append failed: {exc}"))
                self._pending = []
                return
            self._visible_end = end
            if not self._readers and len(self._segments) > 1:
                await self._release()  # nobody reads the log: keep only the current segment
            for _, future in group:
                if not future.done():
                    future.set_result(end)  # every record of the group is persisted by now
            if self._barriers:
                waiting = []
                for target, future in self._barriers:
                    if target <= end:
                        if not future.done():
                            future.set_result(end)
                    else:
                        waiting.append((target, future))
                self._barriers = waiting
            self._notify()

    async def _write_until_room(
        self,
        loop: asyncio.AbstractEventLoop,
        group: list[tuple[bytes, asyncio.Future[int]]],
        sync: bool,
    ) -> int:
        """Write a group; while the disk is full, hold it (refusing new records) and retry
        as segments are released. Raises LogFull if the log closes meanwhile."""
        written = 0
        delay = 0.05
        while True:
            try:
                end: int = await loop.run_in_executor(
                    self._io, self._write_group, [r for r, _ in group[written:]], sync
                )
            except _DiskFullError as full:
                written += full.written
                if self._disk_full is None:
                    log.warning(
                        "write-ahead log: the disk is full (%s); refusing new batches and "
                        "holding %d until there is room",
                        full.error.strerror,
                        len(group) - written,
                    )
                self._disk_full = full.error
                if self._closing:
                    raise LogFull(self.full_message()) from None
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._room.wait()
                delay = min(delay * 2, _ROOM_RETRY_MAX_S)
                continue
            if self._disk_full is not None:
                log.warning("write-ahead log: room on disk again; accepting batches")
                self._disk_full = None
            return end

    def _write_group(self, records: list[bytes], sync: bool) -> int:
        """Write records to the last segment, rolling over when it is full (I/O thread).
        Raises _DiskFullError, with the torn record cut off, when the disk is full."""
        last = self._segments[-1]
        chunk: list[bytes] = []
        chunk_bytes = 0
        written = 0
        try:
            for record in records:
                if last.size + chunk_bytes + len(record) > self.segment_bytes and (
                    last.size + chunk_bytes
                ):
                    self._write(chunk, chunk_bytes)
                    written += len(chunk)
                    last = self._roll()
                    chunk, chunk_bytes = [], 0
                chunk.append(record)
                chunk_bytes += len(record)
            self._write(chunk, chunk_bytes)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            raise _DiskFullError(written, exc) from exc
        if sync and self._file is not None:
            os.fdatasync(self._file)
            self._count_fsync()
        elif self.fsync_policy == "interval":
            self._unsynced = True
        return last.end

    def _write(self, chunk: list[bytes], chunk_bytes: int) -> None:
        if not chunk or self._file is None:
            return
        data = b"".join(chunk)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._file, view)
                view = view[written:]
        except OSError:
            os.ftruncate(self._file, self._segments[-1].size)  # no torn record stays behind
            raise
        self._segments[-1].size += chunk_bytes
        self.bytes_written += chunk_bytes

    def _roll(self) -> _Segment:
        """Close the full segment (fsynced unless fsync=off) and start the next one."""
        assert self._file is not None
        start = self._segments[-1].end
        segment = _Segment(start, _segment_path(self.directory, start), 0)
        # Opened first: when the disk refuses the new file, the full segment stays current.
        new_file = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if self.fsync_policy != "off":
            os.fdatasync(self._file)
            self._count_fsync()
        os.close(self._file)
        self._file = new_file
        if self.fsync_policy != "off":
            _fsync_dir(self.directory)
        self._segments.append(segment)
        return segment

    def _count_fsync(self) -> None:
        self.fsyncs += 1
        if self.on_fsync is not None:
            self.on_fsync(1)

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            await asyncio.sleep(self.fsync_interval_s)
            await loop.run_in_executor(self._io, self._sync_if_dirty)

    def _sync_if_dirty(self) -> None:
        if self._unsynced and self._file is not None:
            self._unsynced = False
            os.fdatasync(self._file)
            self._count_fsync()

    def _notify(self) -> None:
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    # -- reading -------------------------------------------------------------------------

    async def wait_beyond(self, position: int, timeout: float | None = None) -> bool:
        """Wait until records after `position` are visible, at most `timeout` seconds or
        until `wake_readers`; returns whether there are."""
        if self._visible_end > position:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._advanced.wait()
        return self._visible_end > position

    def wake_readers(self) -> None:
        """Return every `wait_beyond` now (used to stop readers)."""
        self._notify()

    def read(self, position: int, max_bytes: int = 4 << 20) -> tuple[list[bytes], int]:
        """Payloads of the whole records from `position`, about `max_bytes` of them at most
        (at least one), up to the visible end; and the position after the last one.

        Blocking file I/O: call it through `read_async` from the event loop.
        """
        position = max(position, self._segments[0].start)
        payloads: list[bytes] = []
        end = self._visible_end
        taken = 0
        for segment in self._segments_from(position):
            if segment.start >= end:
                break  # rolled to by a write not visible yet: records before it come first
            position = max(position, segment.start)
            stop = min(end, segment.end)
            if position >= stop:
                continue
            with segment.path.open("rb") as handle:
                handle.seek(position - segment.start)
                data = handle.read(min(stop - position, max(max_bytes - taken, 0)) or HEADER.size)
                offset = 0
                while offset + HEADER.size <= len(data):
                    length, crc = HEADER.unpack_from(data, offset)
                    record_end = offset + HEADER.size + length
                    if record_end > len(data):
                        if offset == 0:  # a record larger than max_bytes: read it whole
                            data += handle.read(record_end - len(data))
                            continue
                        break
                    payload = data[offset + HEADER.size : record_end]
                    if zlib.crc32(payload) != crc:
                        raise LogCorrupt(
                            f"{segment.path.name}: record at offset "
                            f"{position - segment.start + offset} fails its CRC"
                        )
                    payloads.append(payload)
                    offset = record_end
                position += offset
                taken += offset
            if taken >= max_bytes or position < stop:
                break
        return payloads, position

    def _segments_from(self, position: int) -> Iterator[_Segment]:
        segments = list(self._segments)  # one snapshot: other threads add and release
        starts = [s.start for s in segments]
        index = max(bisect.bisect_right(starts, position) - 1, 0)
        yield from segments[index:]

    async def read_async(self, position: int, max_bytes: int = 4 << 20) -> tuple[list[bytes], int]:
        return await asyncio.to_thread(self.read, position, max_bytes)

    def scan(self) -> Iterator[bytes]:
        """Every retained record's payload, oldest first (blocking; for recovery at start)."""
        position = self.start
        while True:
            payloads, position = self.read(position, 16 << 20)
            if not payloads:
                return
            yield from payloads

    # -- bookmarks -----------------------------------------------------------------------

    def register_reader(self, name: str) -> int:
        """Declare a reader that holds on to segments; returns its bookmark (where it
        resumes). A new reader starts at the oldest retained record."""
        if not _READER_NAME.match(name):
            raise ValueError(
                f"reader name {name!r}: use letters, digits, '_', '.' or '-' (at most 64)"
            )
        self._readers.add(name)
        position = self._bookmarks.get(name, self.start)
        return max(position, self.start)

    def bookmark(self, name: str) -> int:
        return max(self._bookmarks.get(name, self.start), self.start)

    async def commit_bookmark(self, name: str, position: int) -> None:
        """Durably record that `name` consumed the log up to `position`, then delete the
        segments every registered reader has passed."""
        if name not in self._readers:
            raise KeyError(f"reader {name!r} is not registered")
        # Segments go first, so that a full disk gets room for the bookmark file. Safe: the
        # reader is done with them, and after a crash it resumes from the oldest retained.
        self._bookmarks[name] = position
        await self._release()
        try:
            await asyncio.to_thread(self._write_bookmark, name, position)
        except OSError as exc:
            if exc.errno not in _DISK_FULL:
                raise
            log.warning("write-ahead log: bookmark %s not saved, the disk is full", name)

    def _write_bookmark(self, name: str, position: int) -> None:
        folder = self.directory / "bookmarks"
        temp = folder / f".{name}.tmp"
        with temp.open("w") as handle:
            handle.write(f"{position}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, folder / name)
        _fsync_dir(folder)

    def low_water_mark(self) -> int:
        """The smallest bookmark of the registered readers (the visible end if none)."""
        if not self._readers:
            return self._visible_end
        return min(self.bookmark(name) for name in self._readers)

    async def _release(self) -> None:
        """Delete segments wholly before every registered reader's bookmark."""
        mark = self.low_water_mark()
        doomed = [s for s in self._segments[:-1] if s.end <= mark]
        if not doomed:
            return
        # Drop them from the list first: readers and the cap then ignore them at once. In
        # place: the I/O thread may be appending a new segment to this very list.
        del self._segments[: len(doomed)]
        await asyncio.to_thread(self._delete, doomed)
        self._room.set()

    def _delete(self, segments: list[_Segment]) -> None:
        for segment in segments:
            segment.path.unlink(missing_ok=True)
        _fsync_dir(self.directory)

    def segment_starts(self) -> list[int]:
        return [s.start for s in self._segments]

    # -- closing -------------------------------------------------------------------------

    async def close(self) -> None:
        """Write what was submitted, fsync (unless fsync=off) and close the files."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._room.set()
        if self._flusher is not None:
            await self._flusher
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._io, self._close_file)
        self._notify()
        self._io.shutdown(wait=True)

    def _close_file(self) -> None:
        if self._file is None:
            return
        if self.fsync_policy != "off":
            os.fdatasync(self._file)
        os.close(self._file)
        self._file = None
