"""The record cache: records read from the log once for readers at any position."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protoevents.proxy.record_cache import RecordCache
from protoevents.proxy.wal import WriteAheadLog
from tests.support.ingest_helpers import make_events, run
from tests.support.wal import append


def test_readers_at_one_position_share_one_log_read_and_its_records(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        for _ in range(3):
            await append(wal, make_events(2))
        cache = RecordCache(wal, lambda: wal.start)
        first, second = await asyncio.gather(
            cache.read(wal.start, 1 << 20), cache.read(wal.start, 1 << 20)
        )
        assert cache.log_reads == 1
        records, end = first
        assert second == first and end == wal.end and len(records) == 3
        assert [r.start for r in records[1:]] == [r.end for r in records[:-1]]
        again, _ = await cache.read(records[1].start, 1 << 20)  # from the middle: held
        assert again == records[1:] and cache.log_reads == 1
        assert [len(r.changes()) for r in records] == [2, 2, 2]
        await wal.close()

    run(main())


def test_records_are_dropped_once_every_reader_passed_them(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        for _ in range(3):
            await append(wal, make_events(2))
        low = [wal.start]
        cache = RecordCache(wal, lambda: low[0])
        records, _ = await cache.read(wal.start, 1 << 20)
        low[0] = records[1].end
        cache.drop_passed()
        assert len(cache) == 1 and cache.held_bytes == records[2].size
        held, _ = await cache.read(records[2].start, 1 << 20)
        assert held == records[2:] and cache.log_reads == 1
        await wal.close()

    run(main())


def test_a_failed_log_read_fails_every_reader_waiting_for_it(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        await append(wal, make_events(1))

        async def broken(position: int, max_bytes: int = 0) -> tuple[list[tuple[int, bytes]], int]:
            await asyncio.sleep(0)
            raise OSError(5, "Input/output error")

        wal.read_records_async = broken  # type: ignore[method-assign]
        cache = RecordCache(wal, lambda: wal.start)
        outcomes = await asyncio.gather(
            cache.read(wal.start, 100), cache.read(wal.start, 100), return_exceptions=True
        )
        assert all(isinstance(o, OSError) for o in outcomes)
        await wal.close()

    run(main())
