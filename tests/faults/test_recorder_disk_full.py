"""A full disk under the recorder's spool (a small tmpfs), with `protoevents serve` down."""

from __future__ import annotations

import signal
from pathlib import Path

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import assert_each_stored_once

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


def test_a_full_disk_under_the_spool_drops_only_what_memory_cannot_hold_and_resumes(
    small_disk: Path, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url)
    port = int(proxy.address.rsplit(":", 1)[1])
    assert proxy.stop(signal.SIGTERM) == 0  # down: everything goes to the spool
    filler = small_disk / "filler"
    filler.write_bytes(bytes(800 << 10))  # freed later, "once space is free"
    recorder = Recorder(
        component="controller",
        node="node-1",
        event_types=[ClusterEventType],
        proxy=proxy.address,
        spool_dir=small_disk / "spool",
        batch_size=100,
        queue_size=500,
        flush_interval=0.01,
        backoff_max=0.2,
    )
    try:
        ids = []
        for n in range(12_000):  # about 5 MB: far more than the disk and memory hold
            ids.append(recorder.record(ELECTED, f"event {n} " + "x" * 300))
            if n % 100 == 0:
                poll(lambda: recorder.stats().queued < 200, 10, "the thread to take batches")
        poll(lambda: recorder.stats().spool_error == "disk_full", 10, "the spool to fill")
        stats = recorder.stats()
        assert recorder._delivery.alive
        assert set(stats.dropped) == {"disk_full"}
        # What is neither spooled nor waiting in memory was dropped, and counted: exactly.
        assert stats.spooled + stats.held + stats.queued + stats.dropped_total == 12_000
        assert 0 < stats.held + stats.queued <= 500
        assert stats.spooled > 0
        assert not recorder.flush(0.5)  # what waits in memory is not safe yet

        filler.unlink()
        poll(lambda: recorder.stats().held == 0, 10, "the spool to take what memory held")
        assert recorder.stats().spool_error == ""

        proxy = serve(processes, tmp_path / "data", url, port=port)
        assert recorder.drain(60)
        stats = recorder.stats()
        assert stats.replayed + stats.acknowledged + stats.dropped_total == 12_000
        assert (stats.set_aside, stats.spool_pending) == ({}, 0)
    finally:
        recorder.close(10)
    dropped = stats.dropped_total
    poll(lambda: len(_stored(url)) >= 12_000 - dropped, 60, "the writer to store the events")
    assert proxy.stop(signal.SIGTERM) == 0
    stored = _stored(url)
    assert len(stored) == 12_000 - dropped
    assert_each_stored_once(url, [i for i in ids if i in stored])


def _stored(url: str) -> set[str]:
    from tests.support.stored import stored_counts

    return set(stored_counts(url))
