"""The writer feeds share the log: each record read and decoded once, whatever the feeds'
positions and pace; an idle writer costs no decoding."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from protoevents.proxy import changelog
from protoevents.proxy.changes import Change
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from protoevents.proxy.watch.hub import ChangeHub
from protoevents.proxy.writers.watch import HubWriter
from protoevents.v1 import event_pb2
from tests.support.ingest_helpers import FAST_RETRY, MemoryWriter, make_events, run, wait_until
from tests.support.wal import append


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Counter[bytes]:
    """How many times each record payload is decoded."""
    counted: Counter[bytes] = Counter()
    decode = changelog.decode

    def counting(payload: bytes) -> list[Change]:
        counted[payload] += 1
        return decode(payload)

    monkeypatch.setattr(changelog, "decode", counting)
    return counted


async def append_batches(wal: WriteAheadLog, batches: int, size: int) -> list[event_pb2.Event]:
    appended: list[event_pb2.Event] = []
    for _ in range(batches):
        events = make_events(size)
        await append(wal, events)
        appended.extend(events)
    return appended


def test_several_feeds_decode_each_record_once(tmp_path: Path, decodes: Counter[bytes]) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        writers = [MemoryWriter(name) for name in ("a", "b", "c")]
        d = Dispatcher(wal, writers, backoff=FAST_RETRY, batch_events=7, batch_interval_s=0.01)
        d.start()
        events = await append_batches(wal, 20, 5)
        ids = [e.id for e in events]
        await wait_until(lambda: all(w.ids == ids for w in writers))
        assert await d.stop(timeout=5)
        assert len(decodes) == 20 and set(decodes.values()) == {1}
        assert d.records.log_reads < 3 * 20  # the feeds read the log for each other
        await wal.close()

    run(main())


def test_an_idle_watch_writer_decodes_nothing_and_publishes_once_watched(
    tmp_path: Path, decodes: Counter[bytes]
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        hub = ChangeHub()
        d = Dispatcher(wal, [HubWriter(hub)], backoff=FAST_RETRY, batch_interval_s=0.01)
        d.start()
        await append_batches(wal, 5, 3)
        await wait_until(lambda: wal.bookmark("watch") == wal.end)
        assert not decodes
        assert d.feed("watch").skipped == 5 and d.feed("watch").written == 0
        subscription = hub.subscribe()
        watched = await append_batches(wal, 2, 3)
        taken: list[str] = []
        while len(taken) < len(watched):
            taken.extend(item.change.event.id for item in await subscription.take())
        assert taken == [e.id for e in watched]
        assert len(decodes) == 2 and set(decodes.values()) == {1}
        assert await d.stop(timeout=5)
        await wal.close()

    run(main())


def test_feeds_at_other_bookmarks_a_slow_one_and_a_follower_get_everything_in_order(
    tmp_path: Path, decodes: Counter[bytes]
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        early = await append_batches(wal, 4, 3)
        wal.register_reader("late")
        await wal.commit_bookmark("late", wal.end)  # it took the first records before
        fast, late = MemoryWriter("fast"), MemoryWriter("late")
        slow, follower = MemoryWriter("slow", held=True), MemoryWriter("follower")
        d = Dispatcher(
            wal,
            [fast, late, slow, follower],
            backoff=FAST_RETRY,
            batch_events=4,
            batch_interval_s=0.01,
            follows={"follower": "slow"},
        )
        d.start()
        later = await append_batches(wal, 6, 3)
        everything = [e.id for e in early + later]
        await wait_until(lambda: fast.ids == everything)
        await wait_until(lambda: late.ids == [e.id for e in later])
        assert slow.ids == [] and follower.ids == []  # the follower waits for its leader
        slow.gate.set()
        await wait_until(lambda: slow.ids == everything and follower.ids == everything)
        assert await d.stop(timeout=5)
        assert len(decodes) == 10 and set(decodes.values()) == {1}
        assert len(d.records) == 0  # every feed passed every record: none is held
        await wal.close()

    run(main())


def test_past_its_bound_a_feed_far_behind_reads_again_and_misses_nothing(
    tmp_path: Path, decodes: Counter[bytes]
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        fast, slow = MemoryWriter("fast"), MemoryWriter("slow", held=True)
        d = Dispatcher(
            wal,
            [fast, slow],
            backoff=FAST_RETRY,
            batch_events=3,
            batch_interval_s=0.01,
            read_bytes=1,  # a record a read
            cache_bytes=4 << 10,
        )
        d.start()
        events = await append_batches(wal, 12, 3)
        ids = [e.id for e in events]
        await wait_until(lambda: fast.ids == ids)
        assert 0 < d.records.held_bytes <= 4 << 10
        slow.gate.set()
        await wait_until(lambda: slow.ids == ids)
        assert await d.stop(timeout=5)
        assert len(decodes) == 12 and max(decodes.values()) == 2  # some were dropped, read again
        await wal.close()

    run(main())
