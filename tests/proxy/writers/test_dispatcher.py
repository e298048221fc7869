"""The dispatcher: per-writer batching, bookmarks, isolation of slow and failing writers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protoevents.proxy.changes import CREATED, UPDATED
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from protoevents.v1 import event_pb2
from tests.support.ingest_helpers import (
    FAST_RETRY,
    MemoryWriter,
    make_event,
    make_events,
    run,
    wait_until,
)
from tests.support.wal import append


def dispatcher(wal: WriteAheadLog, *writers: MemoryWriter, **options: Any) -> Dispatcher:
    options.setdefault("backoff", FAST_RETRY)
    return Dispatcher(wal, writers, **options)


def test_a_batch_is_written_when_traffic_goes_idle(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        writer = MemoryWriter("w")
        d = dispatcher(wal, writer, batch_events=1000, batch_interval_s=0.05)
        d.start()
        events = make_events(3)
        await append(wal, events)
        await wait_until(lambda: len(writer.batches) == 1)  # no further traffic needed
        assert writer.ids == [e.id for e in events]
        await wait_until(lambda: wal.bookmark("w") == wal.end)
        await d.stop()
        await wal.close()

    run(main())


def test_a_batch_is_written_when_it_reaches_its_size(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        writer = MemoryWriter("w")
        d = dispatcher(wal, writer, batch_events=10, batch_interval_s=3600)
        d.start()
        events = make_events(10)
        for event in events:
            await append(wal, [event])
        await wait_until(lambda: len(writer.batches) >= 1)
        assert writer.ids == [e.id for e in events]
        await d.stop()
        await wal.close()

    run(main())


def test_repeated_updates_of_an_id_reach_the_writer_once_per_batch(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        writer = MemoryWriter("w")
        d = dispatcher(wal, writer, batch_events=1000, batch_interval_s=3600)
        d.start()
        first = make_event()
        await append(wal, [first])
        for count in (2, 3, 4):
            update = event_pb2.Event()
            update.CopyFrom(first)
            update.count = count
            await append(wal, [], [update])
        await d.stop()
        assert [(c.kind, c.event.count) for c in writer.changes] == [(CREATED, 0), (UPDATED, 4)]
        await wal.close()

    run(main())


def test_a_slow_writer_catches_up_with_nothing_lost_while_the_other_keeps_pace(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path, segment_bytes=4096)
        slow = MemoryWriter("slow", held=True)
        fast = MemoryWriter("fast")
        d = dispatcher(wal, slow, fast, batch_events=50, batch_interval_s=0.01)
        d.start()
        sent: list[str] = []
        for _ in range(40):
            batch = make_events(25)
            await append(wal, batch)  # ingest is never held up by the slow writer
            sent.extend(e.id for e in batch)
        await wait_until(lambda: fast.ids == sent)
        assert slow.ids == []
        assert len(list(tmp_path.glob("*.wal"))) > 1  # kept for the slow writer
        assert wal.bookmark("slow") == 0
        slow.gate.set()
        await wait_until(lambda: slow.ids == sent)
        # Released once both writers passed them; the segment being written stays.
        await wait_until(lambda: len(list(tmp_path.glob("*.wal"))) == 1)
        assert wal.bookmark("slow") == wal.bookmark("fast") == wal.end
        await d.stop()
        await wal.close()

    run(main())


def test_a_failing_writer_is_retried_until_it_takes_the_batch(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        flaky = MemoryWriter("flaky", fail_times=3)
        steady = MemoryWriter("steady")
        d = dispatcher(wal, flaky, steady, batch_events=1000, batch_interval_s=0.01)
        d.start()
        events = make_events(5)
        await append(wal, events)
        await wait_until(lambda: flaky.ids == [e.id for e in events])
        assert flaky.attempts == 4
        assert d.feed("flaky").failures == 3
        assert steady.ids == [e.id for e in events]
        await d.stop()
        await wal.close()

    run(main())


def test_stop_writes_every_pending_change_and_closes_the_writers(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        writers = [MemoryWriter("a"), MemoryWriter("b")]
        d = dispatcher(wal, *writers, batch_events=100_000, batch_interval_s=3600)
        d.start()
        sent: list[str] = []
        for _ in range(20):
            batch = make_events(10)
            await append(wal, batch)
            sent.extend(e.id for e in batch)
        assert await d.stop(timeout=10)
        for writer in writers:
            assert writer.ids == sent
            assert writer.closed
            assert wal.bookmark(writer.name) == wal.end
        await wal.close()

    run(main())


def test_a_restart_resumes_each_writer_from_its_bookmark(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        before = MemoryWriter("w")
        d = dispatcher(wal, before, batch_interval_s=0.01)
        d.start()
        first = make_events(5)
        await append(wal, first)
        await wait_until(lambda: wal.bookmark("w") == wal.end)
        await d.stop()
        second = make_events(5)
        await append(wal, second)  # logged while no dispatcher runs
        await wal.close()

        wal = await WriteAheadLog.open(tmp_path)
        after = MemoryWriter("w")
        d = dispatcher(wal, after, batch_interval_s=0.01)
        d.start()
        await d.stop()
        assert before.ids == [e.id for e in first]
        assert after.ids == [e.id for e in second]  # each change exactly once across restart
        await wal.close()

    run(main())


def test_a_writer_still_failing_at_stop_keeps_its_changes_in_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        down = MemoryWriter("w", fail_times=10**9)
        d = dispatcher(wal, down, batch_interval_s=0.01)
        d.start()
        events = make_events(3)
        await append(wal, events)
        await wait_until(lambda: down.attempts >= 2)
        assert not await d.stop(timeout=0.05)
        assert wal.bookmark("w") == 0
        await wal.close()

        wal = await WriteAheadLog.open(tmp_path)
        back = MemoryWriter("w")
        d = dispatcher(wal, back)
        d.start()
        assert await d.stop(timeout=10)
        assert back.ids == [e.id for e in events]
        await wal.close()

    run(main())


def test_a_write_that_hangs_at_stop_is_cancelled_and_stays_in_the_log(tmp_path: Path) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        hung = MemoryWriter("w", held=True)
        d = dispatcher(wal, hung, batch_interval_s=0.01)
        d.start()
        await append(wal, make_events(2))
        await wait_until(lambda: hung.attempts == 1)
        assert not await d.stop(timeout=0.01)
        assert hung.closed
        assert wal.bookmark("w") == 0
        await wal.close()

    run(main())
