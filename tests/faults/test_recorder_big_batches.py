"""Events whose batch together is over the proxy's 16 MiB message limit, to a real `serve`."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import EventTooLargeError, Recorder
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import assert_each_stored_once, row_count

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED


def test_300_events_of_60_kb_are_cut_into_batches_that_fit_and_all_stored(
    tmp_path: Path, processes: list[ServeProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    proxy = serve(processes, tmp_path / "data", url)
    with Recorder(
        component="controller",
        node="node-1",
        event_types=[ClusterEventType],
        proxy=proxy.address,
        spool_dir=tmp_path / "spool",
        flush_interval=3600,  # one flush: the 300 events would be one 18 MB batch
    ) as recorder:
        ids = [
            recorder.record(ELECTED, f"big {n}", data={"blob": f"{n:05d}" * 12_000})
            for n in range(300)
        ]
        assert recorder.drain(60)
        stats = recorder.stats()
        assert (stats.acknowledged, stats.dropped, stats.set_aside) == (300, {}, {})
        with pytest.raises(EventTooLargeError, match=r"over the recorder's max_event_bytes"):
            recorder.record(ELECTED, "too big", data={"blob": "x" * (1100 << 10)})
    poll(lambda: row_count(url) >= 300, 60, "the writer to store the events")
    assert proxy.stop(signal.SIGTERM) == 0
    assert_each_stored_once(url, ids)
