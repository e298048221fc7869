"""The backlog: changes behind and the oldest unwritten change, per position of the log; trimmed
as bookmarks pass, refilled at start from the retained log, read offline from a log folder, and
scraped per writer from the dispatcher's metrics."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy import changelog
from protoevents.proxy.backlog import Backlog, Behind, read_log_lag
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.ingest import Ingest
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.validation import Limits, Validator
from protoevents.proxy.wal import WriteAheadLog
from protoevents.recorder.registry import Registry
from protoevents.v1 import proxy_service_pb2
from tests.support.ingest_helpers import FAST_RETRY, MemoryWriter, make_events, run, wait_until


class Clock:
    """A wall clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def filled(clock: Clock | None = None) -> Backlog:
    """Records ending at 100, 200, 300, 400 with 1, 2, 3, 4 changes, appended at 10..13."""
    backlog = Backlog(clock or Clock(0.0))
    for n in range(1, 5):
        backlog.add(n * 100, n, 9.0 + n)
    return backlog


def test_behind_at_record_boundaries_counts_the_records_after_the_position() -> None:
    backlog = filled()
    assert backlog.behind(0) == Behind(10, 10.0)
    assert backlog.behind(100) == Behind(9, 11.0)
    assert backlog.behind(300) == Behind(4, 13.0)
    assert backlog.behind(400) == Behind(0, None)
    assert backlog.behind(10_000) == Behind(0, None)


def test_a_position_inside_a_record_counts_that_record_whole() -> None:
    backlog = filled()
    assert backlog.behind(1) == Behind(10, 10.0)
    assert backlog.behind(150) == Behind(9, 11.0)
    assert backlog.behind(399) == Behind(4, 13.0)


def test_until_leaves_out_the_records_readers_cannot_see_yet() -> None:
    backlog = filled()
    assert backlog.behind(100, until=300) == Behind(5, 11.0)
    assert backlog.behind(100, until=299) == Behind(2, 11.0)
    assert backlog.behind(100, until=100) == Behind(0, None)
    assert backlog.behind(300, until=200) == Behind(0, None)


def test_age_is_measured_on_the_clock_and_zero_when_caught_up() -> None:
    clock = Clock(20.0)
    backlog = filled(clock)
    assert backlog.age(0) == 10.0
    assert backlog.age(250) == 8.0  # inside the third record
    assert backlog.age(400) == 0.0
    clock.now = 5.0  # a clock set back: no negative age
    assert backlog.age(0) == 0.0


def test_trim_forgets_passed_records_and_keeps_the_counts_of_the_rest() -> None:
    backlog = filled()
    backlog.trim(150)  # inside the second record: it stays
    assert len(backlog) == 3
    assert backlog.behind(0) == Behind(9, 11.0)  # a position before the trimmed part
    assert backlog.behind(200) == Behind(7, 12.0)
    backlog.trim(300)  # more than half trimmed: compacted
    assert len(backlog) == 1
    assert backlog.behind(0) == Behind(4, 13.0)
    assert backlog.behind(300) == Behind(4, 13.0)
    backlog.add(500, 5, 14.0)  # counts go on from the compacted totals
    assert backlog.behind(300) == Behind(9, 13.0)
    assert backlog.behind(400) == Behind(5, 14.0)
    backlog.trim(500)
    assert len(backlog) == 0
    assert backlog.behind(0) == Behind(0, None)
    backlog.add(600, 6, 15.0)
    assert backlog.behind(0) == Behind(6, 15.0)


def test_a_record_must_end_after_the_last_one() -> None:
    backlog = filled()
    with pytest.raises(ValueError, match="not after the last one"):
        backlog.add(400, 1, 20.0)


def test_many_records_trimmed_step_by_step_stay_exact() -> None:
    count = 100_000
    backlog = Backlog()
    after = [0] * (count + 2)  # after[n]: changes of the records n..count
    for n in range(count, 0, -1):
        after[n] = after[n + 1] + 1 + n % 3
    for n in range(1, count + 1):
        backlog.add(n * 10, 1 + n % 3, float(n))
    for step in range(0, count, 997):
        assert backlog.behind(step * 10) == Behind(after[step + 1], float(step + 1))
        assert backlog.behind(step * 10 + 5) == Behind(after[step + 1], float(step + 1))
        backlog.trim(step * 10 + 9)  # inside record step + 1: it stays
        assert len(backlog) == count - step


def test_behind_is_read_safely_from_another_thread_while_the_loop_appends() -> None:
    backlog = Backlog()
    errors: list[BaseException] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            try:
                changes, oldest = backlog.behind(0)
                assert changes == 0 or oldest is not None
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    reader = threading.Thread(target=scrape)
    reader.start()
    for n in range(1, 50_001):
        backlog.add(n, 1, float(n))
        backlog.trim(n - 10)
    done.set()
    reader.join()
    assert errors == []
    assert backlog.behind(0) == Behind(10, 49_991.0)


# -- filled by ingest, at start and after every append -------------------------------------


def batch(count: int) -> proxy_service_pb2.RecordBatchRequest:
    return proxy_service_pb2.RecordBatchRequest(events=make_events(count))


async def open_ingest(folder: Path, *readers: str) -> Ingest:
    wal = await WriteAheadLog.open(folder, segment_bytes=4096)
    for name in readers:
        wal.register_reader(name)
    ingest = Ingest(wal, Validator(Registry.builtin(), Limits(max_batch_events=100)))
    await ingest.restore()
    return ingest


def test_ingest_indexes_each_record_it_appends_and_a_restart_refills_the_same(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path, "slow", "fast")
        wal = ingest.wal
        ends = []
        for count in (3, 5, 7, 11, 13):  # over several segments of 4 KiB
            await ingest.record(batch(count))
            ends.append(wal.end)
        assert len(wal.segment_starts()) > 1
        assert ingest.backlog.behind(0).changes == 39
        await wal.commit_bookmark("fast", wal.end)
        await wal.commit_bookmark("slow", ends[1])  # wrote the first two batches
        live = [ingest.backlog.behind(p) for p in (0, ends[1], ends[3], wal.end)]
        assert [b.changes for b in live] == [39, 31, 13, 0]
        await wal.close()

        restarted = await open_ingest(tmp_path, "slow", "fast")
        # Only what is past the lowest bookmark is kept, with the same counts and times.
        assert len(restarted.backlog) == 3
        again = [restarted.backlog.behind(p) for p in (0, ends[1], ends[3], restarted.wal.end)]
        assert [b.changes for b in again] == [31, 31, 13, 0]
        for was, now in zip(live[1:3], again[1:3], strict=True):  # times: to the microsecond
            assert was.oldest == pytest.approx(now.oldest, abs=1e-6)
        await restarted.wal.close()

    run(main())


def test_the_time_of_a_record_is_the_received_time_of_its_first_event(tmp_path: Path) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path, "w")
        await ingest.record(batch(2))
        oldest = ingest.backlog.behind(0).oldest
        (_, payload), *_ = ingest.wal.read_records(0)[0]
        first: Timestamp = changelog.parse(payload).created[0].received_time
        assert oldest == pytest.approx(first.seconds + first.nanos / 1e9, abs=1e-6)
        await ingest.wal.close()

    run(main())


def test_trimmed_as_every_reader_passes(tmp_path: Path) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path, "a", "b")
        wal = ingest.wal
        for _ in range(3):
            await ingest.record(batch(2))
        await wal.commit_bookmark("a", wal.end)
        await ingest.record(batch(2))
        assert len(ingest.backlog) == 4  # "b" has read none of them
        await wal.commit_bookmark("b", wal.end)
        await ingest.record(batch(2))
        assert len(ingest.backlog) == 2  # "a" has not read the fourth
        await wal.commit_bookmark("a", wal.end)
        await wal.commit_bookmark("b", wal.end)
        await ingest.record(batch(2))
        assert len(ingest.backlog) == 1  # the one just appended
        await wal.close()

    run(main())


def test_the_log_folder_read_offline_gives_what_the_proxy_keeps(tmp_path: Path) -> None:
    async def main() -> None:
        ingest = await open_ingest(tmp_path, "done", "behind")
        wal = ingest.wal
        for count in (4, 6, 8):
            await ingest.record(batch(count))
        await wal.commit_bookmark("done", wal.end)
        await wal.commit_bookmark("behind", wal.segment_starts()[0])
        kept = ingest.backlog.behind(0)
        lag = await asyncio.to_thread(read_log_lag, tmp_path, ["never"])
        by_name = {r.name: r for r in lag.readers}
        assert sorted(by_name) == ["behind", "done", "never"]
        assert (lag.start, lag.end) == (wal.start, wal.end)
        assert (by_name["done"].bytes, by_name["done"].changes) == (0, 0)
        assert by_name["done"].oldest is None
        behind = by_name["behind"]
        assert (behind.bytes, behind.changes) == (wal.end, 18)
        assert behind.oldest == pytest.approx(kept.oldest, abs=1e-6)
        assert behind.saved and not by_name["never"].saved
        assert (by_name["never"].bookmark, by_name["never"].changes) == (wal.start, 18)
        await wal.close()

    run(main())


# -- the dispatcher's metrics --------------------------------------------------------------


def sample(metrics: Metrics, name: str, writer: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"writer": writer})


def test_the_metrics_give_each_writer_its_changes_behind_and_the_oldest_age(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        wal = await WriteAheadLog.open(tmp_path)
        clock = Clock(0.0)
        backlog = Backlog(clock)
        metrics = Metrics()
        down = MemoryWriter("down", held=True)
        up = MemoryWriter("up")
        options = {"backoff": FAST_RETRY, "batch_interval_s": 0.01, "metrics": metrics}
        d = Dispatcher(wal, [down, up], backlog=backlog, **options)
        ingest = Ingest(
            wal, Validator(Registry.builtin(), Limits(max_batch_events=100)), backlog=backlog
        )
        await ingest.restore()
        d.start()
        for count in (3, 4):
            await ingest.record(batch(count))
        oldest = backlog.behind(0).oldest
        assert oldest is not None
        clock.now = oldest + 42.5
        await wait_until(lambda: d.feed("up").bookmark == wal.end)
        assert sample(metrics, "protoevents_writer_lag_changes", "down") == 7
        age = sample(metrics, "protoevents_writer_oldest_unwritten_age_seconds", "down")
        assert age == pytest.approx(42.5)
        assert sample(metrics, "protoevents_writer_lag_changes", "up") == 0
        assert sample(metrics, "protoevents_writer_oldest_unwritten_age_seconds", "up") == 0
        down.gate.set()  # it can write again
        await wait_until(lambda: d.feed("down").bookmark == wal.end)
        assert sample(metrics, "protoevents_writer_lag_changes", "down") == 0
        assert sample(metrics, "protoevents_writer_oldest_unwritten_age_seconds", "down") == 0
        await d.stop()
        await wal.close()

    run(main())
