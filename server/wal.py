"""The write-ahead log: CRC-checked records in segment files, group commit, per-reader bookmarks.

Layout of the log folder:

- `NNNNNNNNNNNNNNNNNNNN.wal`: a segment; the name is the log position of its first byte
  (20 decimal digits). A record never spans two segments.
- `bookmarks/NAME`: the position up to which the reader NAME has consumed the log (decimal
  text, replaced atomically by write + fsync + rename).

A record is an 8-byte header, `length` (u32, little endian) and `crc32(payload)` (u32), then
`length` payload bytes. Positions are byte offsets in the whole log, so a position names a
record in a segment without an index. Records are visible to readers only once appended under
the fsync policy.

Damage: on open, a torn tail (bytes after the last valid record of the last segment, with no
valid record after them: a write cut short by a crash) is cut off. Any other bad bytes, found at
open or by a reader, are contained: the log resynchronises on the next valid record (a header
whose length fits and whose CRC checks out), keeps every intact record before and after, copies
the bad bytes to `damaged/<segment>.<offset>.bin` and logs an error naming them. Readers skip
the damaged range from then on; the segment itself is never rewritten.

A write that fails (ENOSPC, EFBIG, EIO, a failed fsync) is held: its torn part is cut off, new
records are refused (LogFull for a full disk, LogUnavailable otherwise) and the write is retried
with capped backoff until it succeeds; then records are taken again.
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
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from protoevents.recorder.files import fsync_dir, write_all

log = logging.getLogger(__name__)

HEADER = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30
_SEGMENT = re.compile(r"^(\d{20})\.wal$")
_READER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_RETRY_MAX_S = 1.0
DAMAGED = "damaged"


class LogFull(Exception):  # noqa: N818 - the name says what the caller must handle
    """Appending would take the log over its size cap, or its disk is full; nothing was
    appended."""


class LogUnavailable(Exception):  # noqa: N818
    """The log cannot write for now (an I/O error other than a full disk); nothing was
    appended, and the log retries by itself."""


class _WriteError(Exception):
    """Writing a group failed; `written` records of it went in whole (and synced, under the
    policy) before the error; the rest was cut off."""

    def __init__(self, written: int, error: OSError) -> None:
        super().__init__(str(error))
        self.written = written
        self.error = error


@dataclass(frozen=True, slots=True)
class Damage:
    """Bytes of a segment that hold no valid record, set aside in `copy`."""

    segment: str
    offset: int
    length: int
    copy: Path


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


def _record_end(data: bytes | memoryview, offset: int) -> int | None:
    """The offset after the valid record at `offset` of `data`, or None."""
    if offset + HEADER.size > len(data):
        return None
    length, crc = HEADER.unpack_from(data, offset)
    end: int = offset + HEADER.size + length
    if length > MAX_RECORD_BYTES or end > len(data):
        return None
    if zlib.crc32(data[offset + HEADER.size : end]) != crc:
        return None
    return end


def _resume_at(data: bytes | memoryview, offset: int) -> int | None:
    """The offset of the first valid record after the bad one at `offset`, or None.

    The record's own length is tried first (a flipped payload byte leaves it intact), then
    every later offset."""
    if offset + HEADER.size <= len(data):
        length, _ = HEADER.unpack_from(data, offset)
        after: int = offset + HEADER.size + length
        fits = length <= MAX_RECORD_BYTES and after < len(data)
        if fits and _record_end(data, after) is not None:
            return after
    for candidate in range(offset + 1, len(data) - HEADER.size + 1):
        if _record_end(data, candidate) is not None:
            return candidate
    return None


def survey(data: bytes) -> tuple[list[tuple[int, int]], int]:
    """The damaged ranges (start, end) of a segment's bytes, each followed by a valid record,
    and the offset after its last valid record (bytes past it hold none)."""
    damaged: list[tuple[int, int]] = []
    offset = last_good = 0
    while offset < len(data):
        end = _record_end(data, offset)
        if end is not None:
            offset = last_good = end
            continue
        resume = _resume_at(data, offset)
        if resume is None:
            break
        damaged.append((offset, resume))
        offset = resume
    return damaged, last_good


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
        self._write_error: OSError | None = None  # set while a group waits to be written
        self._tail_unknown = False  # a cut after a failed write did not go through
        self._room = asyncio.Event()  # set when segments were deleted
        self._flusher: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._holes: dict[int, int] = {}  # start -> end of damaged ranges readers skip
        self._holes_lock = threading.Lock()
        self.fsyncs = 0
        self.bytes_written = 0
        self.recovered_truncated_bytes = 0
        self.damage: list[Damage] = []  # found since open, oldest first
        self.on_fsync: Callable[[int], None] | None = None
        # Called on the event loop when the log starts or stops refusing records for an I/O
        # error, and (from any thread) when damage is found.
        self.on_state: Callable[[], None] | None = None
        self.on_damage: Callable[[Damage], None] | None = None

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
        paths = [p for p in sorted(self.directory.iterdir()) if _SEGMENT.match(p.name)]
        for path in paths:
            start = int(path.name.removesuffix(".wal"))
            data = path.read_bytes()
            damaged, good = survey(data)
            for first, end in damaged:
                self._contained(path, start, first, data[first:end])
            if good < len(data) and path == paths[-1]:
                # Nothing valid after it at the end of the log: a write torn by a crash.
                log.warning(
                    "write-ahead log %s: cut %d bytes of a torn tail at offset %d",
                    path.name,
                    len(data) - good,
                    good,
                )
                with path.open("r+b") as handle:
                    handle.truncate(good)
                    os.fsync(handle.fileno())
                self.recovered_truncated_bytes += len(data) - good
                data = data[:good]
            elif good < len(data):  # an older segment's bad end: damage, kept
                self._contained(path, start, good, data[good:])
            self._segments.append(_Segment(start, path, len(data)))
        for path in (self.directory / "bookmarks").iterdir():
            if _READER_NAME.match(path.name):
                with contextlib.suppress(ValueError):
                    self._bookmarks[path.name] = int(path.read_text().strip())
        if not self._segments:
            self._segments.append(_Segment(0, _segment_path(self.directory, 0), 0))
            _segment_path(self.directory, 0).touch()
            fsync_dir(self.directory)
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
    def reserved_end(self) -> int:
        """Position after the last submitted record (written or not yet)."""
        return self._reserved_end

    @property
    def size(self) -> int:
        """Bytes retained on disk plus bytes submitted and not yet written."""
        return self._reserved_end - self._segments[0].start

    def free_bytes(self) -> int:
        """Bytes that may still be submitted (none while a write is held)."""
        return 0 if self._write_error is not None else self.max_bytes - self.size

    @property
    def unavailable(self) -> OSError | None:
        """The I/O error the log is held by (it refuses records meanwhile), or None."""
        return self._write_error

    def full_message(self) -> str:
        """Why the log takes no more records: its disk or its size cap is full."""
        error = self._write_error
        if error is not None and error.errno in _DISK_FULL:
            return (
                f"the disk of the write-ahead log is full ({error.strerror}): "
                "a writer is behind; retry later"
            )
        if error is not None:
            return f"the write-ahead log cannot write ({error.strerror}): retry later"
        return (
            f"write-ahead log is full ({self.size} of {self.max_bytes} bytes used): "
            "a writer is behind; retry later"
        )

    def refusal(self) -> LogFull | LogUnavailable:
        """The error a record is refused with now: LogUnavailable while a write fails for
        an I/O error other than a full disk, else LogFull."""
        error = self._write_error
        if error is not None and error.errno not in _DISK_FULL:
            return LogUnavailable(self.full_message())
        return LogFull(self.full_message())

    def submit(self, payload: bytes) -> asyncio.Future[int]:
        """Queue one record; the future gives the position after it once it is persisted.

        Raises LogFull, appending nothing, when the record would exceed the size cap or the
        disk is full, and LogUnavailable while the log cannot write.
        """
        if self._closing:
            raise RuntimeError("the write-ahead log is closed")
        if self._failed is not None:
            raise RuntimeError("the write-ahead log failed") from self._failed
        record = frame(payload)
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
        if self._write_error is not None or self.size + len(record) > self.max_bytes:
            raise self.refusal()
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
                end = await self._write_retrying(loop, group, sync)
            except (LogFull, LogUnavailable) as exc:  # closing while held: nothing is acked
                for _, future in group + self._pending + self._barriers:
                    if not future.done():
                        future.set_exception(type(exc)(str(exc)))
                self._pending, self._barriers = [], []
                return
            except BaseException as exc:  # a bug, not an I/O error: nothing after it is trusted
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

    async def _write_retrying(
        self,
        loop: asyncio.AbstractEventLoop,
        group: list[tuple[bytes, asyncio.Future[int]]],
        sync: bool,
    ) -> int:
        """Write a group; while a write fails, hold it (refusing new records) and retry with
        capped backoff, sooner when segments are released. Raises LogFull or LogUnavailable
        if the log closes meanwhile."""
        written = 0
        delay = 0.05
        while True:
            try:
                end: int = await loop.run_in_executor(
                    self._io, self._write_group, [r for r, _ in group[written:]], sync
                )
            except _WriteError as failed:
                written += failed.written
                if self._write_error is None:
                    level = logging.WARNING if failed.error.errno in _DISK_FULL else logging.ERROR
                    log.log(
                        level,
                        "write-ahead log: cannot write (%s); refusing new batches and holding "
                        "%d until a write succeeds",
                        failed.error.strerror or failed.error,
                        len(group) - written,
                    )
                    self._write_error = failed.error
                    self._state_changed()
                self._write_error = failed.error
                if self._closing:
                    raise self.refusal() from None
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._room.wait()
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            if self._write_error is not None:
                log.warning("write-ahead log: writing again; accepting batches")
                self._write_error = None
                self._state_changed()
            return end

    def _state_changed(self) -> None:
        if self.on_state is not None:
            self.on_state()

    def _write_group(self, records: list[bytes], sync: bool) -> int:
        """Write records to the last segment, rolling over when it is full (I/O thread).

        On any OSError (in a write, an fsync or a roll), raises _WriteError after cutting the
        current segment back to where this group began in it, so that what a retry writes is
        never trusted to a page cache whose state is unknown: after a failed fsync Linux may
        have marked the unwritten pages clean (the error is reported once), so a second fsync
        would succeed without writing them. Cutting them off and writing them again makes
        them dirty, and the next fsync writes them. Records in segments rolled before the
        error were synced by the roll (unless fsync=off) and count as written.
        """
        last = self._segments[-1]
        if self._tail_unknown and self._file is not None:
            os.ftruncate(self._file, last.size)  # raises into the caller's retry if it fails
            self._tail_unknown = False
        base = last.size  # the current segment's size before this group
        chunk: list[bytes] = []
        chunk_bytes = 0
        written = 0
        try:
            for record in records:
                if last.size + chunk_bytes + len(record) > self.segment_bytes and (
                    last.size + chunk_bytes
                ):
                    self._write(chunk, chunk_bytes)
                    last = self._roll()
                    written += len(chunk)
                    base = 0
                    chunk, chunk_bytes = [], 0
                chunk.append(record)
                chunk_bytes += len(record)
            self._write(chunk, chunk_bytes)
            if sync and self._file is not None:
                os.fdatasync(self._file)
                self._count_fsync()
            elif self.fsync_policy == "interval":
                self._unsynced = True
        except OSError as exc:
            self._cut(base)
            raise _WriteError(written, exc) from exc
        return last.end

    def _cut(self, size: int) -> None:
        """Cut the current segment back to `size` bytes (what a failed write left after it)."""
        self._segments[-1].size = size
        if self._file is None:
            return
        try:
            os.ftruncate(self._file, size)
        except OSError:
            self._tail_unknown = True  # cut again before the next write

    def _write(self, chunk: list[bytes], chunk_bytes: int) -> None:
        if not chunk or self._file is None:
            return
        write_all(self._file, b"".join(chunk))
        self._segments[-1].size += chunk_bytes
        self.bytes_written += chunk_bytes

    def _roll(self) -> _Segment:
        """Close the full segment (fsynced unless fsync=off) and start the next one."""
        assert self._file is not None
        start = self._segments[-1].end
        segment = _Segment(start, _segment_path(self.directory, start), 0)
        # Opened first: when the disk refuses the new file, the full segment stays current.
        new_file = os.open(segment.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if self.fsync_policy != "off":
                os.fdatasync(self._file)
                self._count_fsync()
        except OSError:
            os.close(new_file)
            with contextlib.suppress(OSError):
                segment.path.unlink()
            raise
        os.close(self._file)
        self._file = new_file
        if self.fsync_policy != "off":
            fsync_dir(self.directory)
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
            try:
                os.fdatasync(self._file)
            except OSError as exc:  # acknowledged already: all that is left is to say so
                log.error("write-ahead log: fsync failed (%s); records may not be durable", exc)
                return
            self._unsynced = False
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
        (at least one, whatever `max_bytes`), up to the visible end; and the position after
        the last one. Damaged bytes on the way are contained (see the module docstring) and
        skipped.

        Blocking file I/O: call it through `read_async` from the event loop.
        """
        records, position = self.read_records(position, max_bytes)
        return [payload for _, payload in records], position

    def read_records(
        self, position: int, max_bytes: int = 4 << 20
    ) -> tuple[list[tuple[int, bytes]], int]:
        """As `read`, each payload with the position of its record (damage skipped on the
        way makes a record start elsewhere than where the one before it ended)."""
        position = max(position, self._segments[0].start)
        records: list[tuple[int, bytes]] = []
        end = self._visible_end
        taken = 0
        for segment in self._segments_from(position):
            if segment.start >= end:
                break  # rolled to by a write not visible yet: records before it come first
            position = max(position, segment.start)
            stop = min(end, segment.end)
            if position >= stop:
                continue
            position, taken = self._read_segment(segment, position, stop, max_bytes, taken, records)
            if taken >= max_bytes or position < stop:
                break
        return records, position

    def _read_segment(
        self,
        segment: _Segment,
        position: int,
        stop: int,
        max_bytes: int,
        taken: int,
        records: list[tuple[int, bytes]],
    ) -> tuple[int, int]:
        """Add the records (position, payload) of `segment` from `position` to `stop` (while
        under `max_bytes`, at least one); returns the position reached and the bytes taken so
        far."""
        with segment.path.open("rb") as handle:
            while position < stop and (taken < max_bytes or not records):
                hole_end = self._holes.get(position)
                if hole_end is not None:
                    position = hole_end
                    continue
                handle.seek(position - segment.start)
                # At least a header: a read under one would find no record and never end.
                data = handle.read(min(stop - position, max(max_bytes - taken, HEADER.size)))
                offset, bad = 0, False
                while offset + HEADER.size <= len(data):
                    if offset and position + offset in self._holes:
                        break
                    length, crc = HEADER.unpack_from(data, offset)
                    record_end = offset + HEADER.size + length
                    if length > MAX_RECORD_BYTES or position + record_end > stop:
                        bad = True  # a record cannot run past what was written
                        break
                    if record_end > len(data):
                        if offset:
                            break
                        data += handle.read(record_end - len(data))  # larger than max_bytes
                        if record_end > len(data):
                            bad = True
                            break
                    payload = data[offset + HEADER.size : record_end]
                    if zlib.crc32(payload) != crc:
                        bad = True
                        break
                    records.append((position + offset, payload))
                    offset = record_end
                position += offset
                taken += offset
                if bad or (not offset and stop - position < HEADER.size):
                    position = self._contain(segment, position, stop)
        return position, taken

    def _contain(self, segment: _Segment, position: int, stop: int) -> int:
        """Set aside the damaged bytes at `position` (up to the next valid record, or `stop`)
        and return the position after them (reader threads)."""
        with self._holes_lock:
            known = self._holes.get(position)
            if known is not None:
                return known
            with segment.path.open("rb") as handle:
                handle.seek(position - segment.start)
                data = handle.read(stop - position)
            resume = _resume_at(data, 0)
            bad = data if resume is None else data[:resume]
            self._contained(segment.path, segment.start, position - segment.start, bad)
            return position + len(bad)

    def _contained(self, path: Path, start: int, offset: int, bad: bytes) -> None:
        """Skip `bad`, at `offset` of the segment `path`, from now on; copy it aside, log it
        and report it (once: damage already set aside is only logged as a warning)."""
        self._holes[start + offset] = start + offset + len(bad)
        folder = self.directory / DAMAGED
        copy = folder / f"{path.name}.{offset}.bin"
        if copy.exists() and copy.stat().st_size == len(bad):
            log.warning(
                "write-ahead log %s: %d damaged bytes at offset %d skipped (set aside before, "
                "in %s)",
                path.name,
                len(bad),
                offset,
                copy,
            )
            return
        try:
            folder.mkdir(exist_ok=True)
            with copy.open("wb") as handle:
                handle.write(bad)
                handle.flush()
                os.fsync(handle.fileno())
            kept = f"copied to {copy}"
        except OSError as exc:
            kept = f"not copied aside ({exc})"
        log.error(
            "write-ahead log %s: %d bytes at offset %d are damaged (no valid record); the "
            "records before and after them are kept; the damaged bytes are lost to the "
            "writers, %s",
            path.name,
            len(bad),
            offset,
            kept,
        )
        damage = Damage(path.name, offset, len(bad), copy)
        self.damage.append(damage)
        if self.on_damage is not None:
            self.on_damage(damage)

    def damaged_files(self) -> list[Path]:
        """The copies of damaged bytes an operator has not cleared yet."""
        folder = self.directory / DAMAGED
        return sorted(folder.glob("*.bin")) if folder.is_dir() else []

    def _segments_from(self, position: int) -> Iterator[_Segment]:
        segments = list(self._segments)  # one snapshot: other threads add and release
        starts = [s.start for s in segments]
        index = max(bisect.bisect_right(starts, position) - 1, 0)
        yield from segments[index:]

    async def read_async(self, position: int, max_bytes: int = 4 << 20) -> tuple[list[bytes], int]:
        return await asyncio.to_thread(self.read, position, max_bytes)

    async def read_records_async(
        self, position: int, max_bytes: int = 4 << 20
    ) -> tuple[list[tuple[int, bytes]], int]:
        return await asyncio.to_thread(self.read_records, position, max_bytes)

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
        fsync_dir(folder)

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
        fsync_dir(self.directory)

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
