"""A real `serve` under a file-size limit (RLIMIT_FSIZE): once the log's segment reaches it,
writes fail with EFBIG (serve ignores SIGXFSZ); the proxy refuses with UNAVAILABLE and says
NOT_SERVING while the recorders hold everything; once the limit is raised it recovers by
itself and every recorded event is stored exactly once."""

from __future__ import annotations

import resource
import signal
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType
from protoevents.recorder import Recorder
from protoevents.v1 import proxy_service_pb2
from tests.support.health import NOT_SERVING, SERVING, status
from tests.support.ingest_helpers import make_events
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.services import DatabaseFactory
from tests.support.stored import assert_each_stored_once, row_count

ELECTED = ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED
LIMIT = 256 << 10  # bytes any file of the proxy may reach: its log segment, here
RECORDERS = 2
CHUNK = 100  # events recorded per recorder at a time
MAX_EVENTS = 40_000  # the limit is reached long before this many (about 1,000 events)


def _limit_file_size(limit: int) -> Callable[[], None]:
    """Lower the soft limit only: the test may raise it again without privileges."""
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    return lower


def _record(recorders: list[Recorder], ids: list[str]) -> None:
    """CHUNK events on each recorder; returns once each has them acknowledged or spooled."""
    for n, recorder in enumerate(recorders):
        ids += [recorder.record(ELECTED, f"c{n} {len(ids) + i}") for i in range(CHUNK)]
    for recorder in recorders:
        assert recorder.flush(60), recorder.stats()


@pytest.mark.timeout(300)
def test_a_log_at_the_file_size_limit_refuses_as_unavailable_and_recovers_when_it_is_raised(
    tmp_path: Path,
    processes: list[ServeProcess],
    postgres_database: DatabaseFactory,
    make_recorder: Callable[..., Recorder],
) -> None:
    url = postgres_database()  # not SQLite: its files would reach the limit first
    proxy = ServeProcess(
        tmp_path / "data",
        "--db",
        url,
        jsonl=False,  # the log is then the only file that grows
        preexec_fn=_limit_file_size(LIMIT),
        follow_log=True,
    )
    processes.append(proxy)
    recorders = [
        make_recorder(proxy.address, component=f"c{n}", ack_timeout=2.0) for n in range(RECORDERS)
    ]
    ids: list[str] = []
    while status(proxy.channel, "protoevents.wal") == SERVING:
        assert len(ids) < MAX_EVENTS, "the log never reached the file-size limit"
        _record(recorders, ids)
    (segment,) = (tmp_path / "data" / "wal").glob("*.wal")
    assert LIMIT - (64 << 10) < segment.stat().st_size <= LIMIT  # cut back to its last record

    with pytest.raises(grpc.RpcError) as refused:  # a batch sent now: refused, not INTERNAL
        request = proxy_service_pb2.RecordBatchRequest(events=make_events(10))
        proxy.stub.RecordBatch(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "the write-ahead log cannot write (File too large)" in (refused.value.details() or "")
    assert status(proxy.channel, "") == NOT_SERVING
    assert status(proxy.channel, "protoevents.wal") == NOT_SERVING
    assert status(proxy.channel, "protoevents.wal.integrity") == SERVING
    for _ in range(3):  # the recorders hold what they record meanwhile: spooled, not dropped
        _record(recorders, ids)
    for recorder in recorders:
        stats = recorder.stats()
        assert stats.spooled > 0 and stats.dropped == {} and stats.set_aside == {}, stats
    assert proxy.process.poll() is None  # no SIGXFSZ

    resource.prlimit(
        proxy.process.pid,
        resource.RLIMIT_FSIZE,
        (resource.RLIM_INFINITY, resource.getrlimit(resource.RLIMIT_FSIZE)[1]),
    )
    poll(lambda: status(proxy.channel, "") == SERVING, 60, "the proxy to serve again")
    assert status(proxy.channel, "protoevents.wal") == SERVING
    for recorder in recorders:
        assert recorder.drain(120), recorder.stats()
        stats = recorder.stats()
        assert stats.dropped == {} and stats.set_aside == {}, stats
    poll(lambda: row_count(url) >= len(ids), 120, "every recorded event in the database")
    assert proxy.stop(signal.SIGTERM) == 0
    log = proxy.log()
    assert "write-ahead log: cannot write (File too large)" in log
    assert "write-ahead log: writing again; accepting batches" in log
    assert_each_stored_once(url, ids)
