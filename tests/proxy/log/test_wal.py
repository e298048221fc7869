"""The write-ahead log: recovery from torn tails, group commit, bookmarks, segments, cap."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from protoevents.proxy import wal as wal_module
from protoevents.proxy.wal import HEADER, LogFull, LogUnavailable, WriteAheadLog
from protoevents.recorder import files as files_module
from tests.support.ingest_helpers import wait_until
from tests.support.wal import records_of

T = TypeVar("T")


def use_disk(monkeypatch: pytest.MonkeyPatch, disk: object) -> None:
    """The log's file calls (its own and the shared writes) go to `disk`."""
    monkeypatch.setattr(wal_module, "os", disk)
    monkeypatch.setattr(files_module, "os", disk)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


async def read_all(wal: WriteAheadLog, position: int | None = None) -> list[bytes]:
    found: list[bytes] = []
    position = wal.start if position is None else position
    while True:
        payloads, position = await wal.read_async(position, 1000)
        if not payloads:
            return found
        found.extend(payloads)


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.wal"))


def test_records_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        ends = [await wal.append(f"record {i}".encode()) for i in range(5)]
        assert ends == sorted(ends)
        assert await read_all(wal) == [f"record {i}".encode() for i in range(5)]
        await wal.close()
        again = await WriteAheadLog.open(tmp_path)
        assert await read_all(again) == [f"record {i}".encode() for i in range(5)]
        assert again.end == ends[-1]
        await again.close()

    run(main())


@pytest.mark.parametrize(
    "tail",
    [
        HEADER.pack(100, 0) + b"only part of it",  # a write cut short by a crash
        b"\x07\x00",  # part of a header
    ],
)
def test_a_torn_tail_is_cut_and_everything_before_it_kept(tmp_path: Path, tail: bytes) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        for i in range(3):
            await wal.append(f"kept {i}".encode())
        await wal.close()
        (segment,) = segments(tmp_path)
        good_size = segment.stat().st_size
        with segment.open("ab") as handle:
            handle.write(tail)
        wal = await WriteAheadLog.open(tmp_path)
        assert segment.stat().st_size == good_size
        assert wal.recovered_truncated_bytes == len(tail)
        await wal.append(b"after recovery")
        assert await read_all(wal) == [b"kept 0", b"kept 1", b"kept 2", b"after recovery"]
        await wal.close()

    run(main())


def test_a_record_failing_its_crc_at_the_tail_is_cut(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        await wal.append(b"first")
        await wal.append(b"second")
        await wal.close()
        (segment,) = segments(tmp_path)
        data = bytearray(segment.read_bytes())
        data[-1] ^= 0xFF  # flip a bit in the last payload
        segment.write_bytes(bytes(data))
        wal = await WriteAheadLog.open(tmp_path)
        assert await read_all(wal) == [b"first"]
        await wal.close()

    run(main())


def test_concurrent_appends_share_one_fsync(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, fsync="batch")
        futures = [wal.submit(f"{i}".encode()) for i in range(100)]
        ends = await asyncio.gather(*futures)
        assert wal.fsyncs == 1
        assert len(set(ends)) == 1  # one group, persisted together
        assert len(await read_all(wal)) == 100
        await wal.close()

    run(main())


@pytest.mark.parametrize("policy", ["interval", "off"])
def test_other_fsync_policies_ack_after_the_write(tmp_path: Path, policy: str) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, fsync=policy, fsync_interval_s=0.01)
        await wal.append(b"x")
        assert await read_all(wal) == [b"x"]  # acknowledged once written, before any fsync
        if policy == "interval":
            await wait_until(lambda: wal.fsyncs >= 1)  # the timer syncs it
        else:
            assert wal.fsyncs == 0
        await wal.close()
        again = await WriteAheadLog.open(tmp_path)
        assert await read_all(again) == [b"x"]
        await again.close()

    run(main())


def test_segments_are_deleted_only_after_every_reader_passed_them(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=1000, max_bytes=1 << 20)
        assert wal.register_reader("sql") == 0
        assert wal.register_reader("syslog") == 0
        records = [bytes([i]) * 300 for i in range(10)]
        for record in records:
            await wal.append(record)
        assert len(segments(tmp_path)) == 4  # three 308-byte records per segment
        await wal.commit_bookmark("sql", wal.end)
        assert len(segments(tmp_path)) == 4  # syslog has not read them
        _, middle = wal.read(0, 4 * 308)
        await wal.commit_bookmark("syslog", middle)
        assert len(segments(tmp_path)) == 3  # the first segment is behind both
        assert await read_all(wal, middle) == records[4:]
        await wal.commit_bookmark("syslog", wal.end)
        assert len(segments(tmp_path)) == 1  # the segment being written stays
        await wal.close()
        again = await WriteAheadLog.open(tmp_path, segment_bytes=1000)
        assert again.register_reader("sql") == again.end == again.register_reader("syslog")
        await again.close()

    run(main())


def test_a_full_log_refuses_appends_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=1000, max_bytes=3000)
        wal.register_reader("slow")
        acked: list[bytes] = []
        with pytest.raises(LogFull, match="write-ahead log is full"):
            for i in range(100):
                record = i.to_bytes(2, "big") * 100
                await wal.append(record)
                acked.append(record)
        assert 5 <= len(acked) < 100
        assert await read_all(wal) == acked
        # The reader catches up: its segments go and appends are taken again.
        await wal.commit_bookmark("slow", wal.end)
        await wal.append(b"room again")
        assert await read_all(wal, wal.bookmark("slow")) == [b"room again"]
        await wal.close()

    run(main())


def test_readers_wait_for_new_records(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        assert not await wal.wait_beyond(wal.end, timeout=0)
        waiting = asyncio.ensure_future(wal.wait_beyond(wal.end))
        await wal.append(b"news")
        assert await asyncio.wait_for(waiting, 5)
        await wal.close()

    run(main())


def test_without_readers_only_the_current_segment_is_kept(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=1000, max_bytes=4000)
        for _ in range(50):  # far more than the cap: nothing holds on to old segments
            await wal.append(b"r" * 300)
        await wait_until(lambda: len(segments(tmp_path)) == 1)
        await wal.close()

    run(main())


def test_a_bookmark_past_a_lost_tail_is_brought_back_to_the_end(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        wal.register_reader("w")
        await wal.append(b"kept")
        await wal.append(b"lost")
        await wal.commit_bookmark("w", wal.end)
        await wal.close()
        (segment,) = segments(tmp_path)
        with segment.open("r+b") as handle:
            handle.truncate(HEADER.size + 4)  # as if the second record never reached the disk
        wal = await WriteAheadLog.open(tmp_path)
        assert wal.register_reader("w") == wal.end == HEADER.size + 4
        await wal.append(b"new")
        assert await read_all(wal, wal.bookmark("w")) == [b"new"]
        await wal.close()

    run(main())


class SmallDisk:
    """`os` for the log, on a disk with `free` bytes left: a write takes what fits, then
    fails with ENOSPC, as a real file system does."""

    def __init__(self, free: int) -> None:
        self.free = free

    def write(self, fd: int, data: Any) -> int:
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = os.write(fd, bytes(data[: self.free]))
        self.free -= written
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_a_full_disk_holds_the_torn_write_refuses_new_records_then_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        disk = SmallDisk(free=250)
        use_disk(monkeypatch, disk)
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=4096, max_bytes=65536)
        await wal.append(b"a" * 100)  # 108 bytes with its header
        held = wal.submit(b"b" * 200)  # 142 of its 208 bytes fit
        await wait_until(lambda: wal.free_bytes() == 0)
        with pytest.raises(LogFull, match=r"the disk of the write-ahead log is full \(No space"):
            wal.submit(b"refused")
        assert not held.done()  # never acknowledged while not whole on disk
        (segment,) = segments(tmp_path)
        assert segment.stat().st_size == 108  # the torn record was cut off

        disk.free = 10_000  # a writer caught up and its segments went
        await asyncio.wait_for(held, 10)
        await wal.append(b"c")
        await wal.close()
        again = await WriteAheadLog.open(tmp_path)
        assert await read_all(again) == [b"a" * 100, b"b" * 200, b"c"]
        await again.close()

    run(main())


def test_closing_while_the_disk_is_full_acknowledges_nothing_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        use_disk(monkeypatch, SmallDisk(free=50))
        wal = await WriteAheadLog.open(tmp_path)
        held = wal.submit(b"x" * 100)
        await wait_until(lambda: wal.free_bytes() == 0)
        await wal.close()
        with pytest.raises(LogFull):
            await held
        monkeypatch.undo()
        again = await WriteAheadLog.open(tmp_path)
        assert await read_all(again) == []
        await again.close()

    run(main())


def test_a_reader_never_skips_records_of_a_write_that_rolled_to_a_new_segment(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=4096, max_bytes=1 << 20)
        wal.register_reader("r")
        await wal.append(b"a" * 100)
        visible = wal.end
        written, release = threading.Event(), threading.Event()
        write_group = wal._write_group

        def held_write(records: list[bytes], sync: bool) -> int:
            end = write_group(records, sync)  # written, rolled into a second segment...
            written.set()
            release.wait(10)  # ...and not visible to readers yet
            return end

        wal._write_group = held_write  # type: ignore[method-assign]
        pending = [wal.submit(b"b" * 3000), wal.submit(b"c" * 3000)]
        assert await asyncio.to_thread(written.wait, 10)
        assert len(wal.segment_starts()) == 2
        assert await wal.read_async(visible) == ([], visible)
        release.set()
        await asyncio.gather(*pending)
        assert await read_all(wal, visible) == [b"b" * 3000, b"c" * 3000]
        await wal.close()

    run(main())


class BrokenDisk:
    """`os` for the log, where writes (or fsyncs) fail with `error` while it is set."""

    def __init__(self, error: int, *, calls: tuple[str, ...] = ("write",)) -> None:
        self.error: int | None = error
        self.calls = calls
        self.failures = 0

    def _fail(self) -> None:
        if self.error is not None:
            self.failures += 1
            raise OSError(self.error, os.strerror(self.error))

    def write(self, fd: int, data: Any) -> int:
        if "write" in self.calls:
            self._fail()
        return os.write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if "fdatasync" in self.calls:
            self._fail()
        os.fdatasync(fd)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


@pytest.mark.parametrize("error", [errno.EFBIG, errno.EIO])
def test_a_write_error_holds_the_group_refuses_as_unavailable_then_resumes_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: int
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        await wal.append(b"before")
        disk = BrokenDisk(error)
        use_disk(monkeypatch, disk)
        changes: list[OSError | None] = []
        wal.on_state = lambda: changes.append(wal.unavailable)
        held = wal.submit(b"held")
        await wait_until(lambda: wal.unavailable is not None)
        with pytest.raises(LogUnavailable, match=rf"cannot write \({os.strerror(error)}\)"):
            wal.submit(b"refused")
        assert isinstance(wal.refusal(), LogUnavailable)
        await wait_until(lambda: disk.failures >= 3)  # retried, and still refusing
        assert not held.done()
        disk.error = None  # the cause went away: the next retry writes
        await asyncio.wait_for(held, 10)
        assert wal.unavailable is None
        assert [c is None for c in changes] == [False, True]
        await wal.append(b"after")
        await wal.close()
        monkeypatch.undo()
        again = await WriteAheadLog.open(tmp_path)
        assert await read_all(again) == [b"before", b"held", b"after"]
        await again.close()

    run(main())


def test_a_failed_fsync_writes_the_group_again_rather_than_trusting_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        await wal.append(b"synced")
        disk = BrokenDisk(errno.EIO, calls=("fdatasync",))
        use_disk(monkeypatch, disk)
        written: list[int] = []
        write = disk.write

        def counting_write(fd: int, data: Any) -> int:
            written.append(len(data))
            return write(fd, data)

        disk.write = counting_write  # type: ignore[method-assign]
        held = wal.submit(b"twice")
        await wait_until(lambda: disk.failures >= 1)
        disk.error = None
        await asyncio.wait_for(held, 10)
        assert len(written) >= 2  # the group was written again after the failed fsync
        (segment,) = segments(tmp_path)
        assert segment.stat().st_size == 2 * HEADER.size + len(b"synced") + len(b"twice")
        await wal.close()

    run(main())


def flip(segment: Path, offset: int) -> None:
    with segment.open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize("where", ["payload", "length"])
def test_a_flipped_byte_mid_segment_loses_only_its_record_and_is_set_aside_loudly(
    tmp_path: Path, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        records = [f"record {i}".encode() * 20 for i in range(9)]
        for record in records:
            await wal.append(record)
        await wal.close()
        (segment,) = segments(tmp_path)
        offset, length = records_of(segment)[4]
        flip(segment, offset + (HEADER.size + 3 if where == "payload" else 2))
        wal = await WriteAheadLog.open(tmp_path)
        assert await read_all(wal) == records[:4] + records[5:]
        assert [(d.segment, d.offset, d.length) for d in wal.damage] == [
            (segment.name, offset, length)
        ]
        assert wal.damaged_files() == [tmp_path / "damaged" / f"{segment.name}.{offset}.bin"]
        (copy,) = wal.damaged_files()
        assert copy.read_bytes() == segment.read_bytes()[offset : offset + length]
        assert wal.recovered_truncated_bytes == 0
        await wal.append(b"new")
        await wal.close()
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert errors == [
            f"write-ahead log {segment.name}: {length} bytes at offset {offset} are damaged "
            "(no valid record); the records before and after them are kept; the damaged bytes "
            f"are lost to the writers, copied to {copy}"
        ]
        again = await WriteAheadLog.open(tmp_path)  # known damage: skipped, not counted again
        assert await read_all(again) == records[:4] + records[5:] + [b"new"]
        assert again.damage == []
        await again.close()

    run(main())


def test_the_bad_end_of_an_older_segment_is_damage_not_a_torn_tail(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=1000, max_bytes=1 << 20)
        wal.register_reader("r")
        records = [bytes([i]) * 300 for i in range(6)]
        for record in records:
            await wal.append(record)
        await wal.close()
        first = segments(tmp_path)[0]
        offset, _ = records_of(first)[-1]
        flip(first, offset + HEADER.size + 10)
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=1000, max_bytes=1 << 20)
        assert await read_all(wal) == records[:2] + records[3:]
        assert [(d.offset, d.length) for d in wal.damage] == [(offset, 308)]
        assert first.stat().st_size == 3 * 308  # kept whole
        await wal.close()

    run(main())


def test_a_reader_that_meets_damage_while_running_skips_it_and_reports_it(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        found: list[wal_module.Damage] = []
        wal.on_damage = found.append
        records = [f"record {i}".encode() * 20 for i in range(6)]
        for record in records:
            await wal.append(record)
        (segment,) = segments(tmp_path)
        offset, length = records_of(segment)[2]
        flip(segment, offset + HEADER.size + 1)  # bit rot under a running proxy
        assert await read_all(wal) == records[:2] + records[3:]
        assert [(d.offset, d.length) for d in found] == [(offset, length)]
        assert await read_all(wal) == records[:2] + records[3:]  # a second reader: same
        assert len(found) == 1
        await wal.close()

    run(main())


@pytest.mark.parametrize("max_bytes", [0, 1, HEADER.size - 1, HEADER.size, HEADER.size + 2])
def test_a_read_under_a_record_header_still_returns_a_record(
    tmp_path: Path, max_bytes: int
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        for i in range(3):
            await wal.append(f"record {i}".encode())
        position, found = wal.start, []
        for _ in range(3):
            payloads, position = await asyncio.wait_for(wal.read_async(position, max_bytes), 5)
            assert len(payloads) == 1
            found.extend(payloads)
        assert found == [f"record {i}".encode() for i in range(3)]
        assert position == wal.end
        await wal.close()

    run(main())


def test_a_read_stops_cleanly_when_less_than_a_header_of_its_budget_is_left(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        first = await wal.append(b"x" * 100)
        await wal.append(b"y" * 100)
        # The first record leaves 3 bytes of the budget: the read ends there or takes the next.
        payloads, position = await asyncio.wait_for(wal.read_async(wal.start, first + 3), 5)
        assert payloads[0] == b"x" * 100
        assert position == (first if len(payloads) == 1 else wal.end)
        records, end = await asyncio.wait_for(wal.read_records_async(wal.start, 1 << 20), 5)
        assert [start for start, _ in records] == [wal.start, first]
        assert end == wal.end
        await wal.close()

    run(main())
