"""PostgreSQL stopped under load and started again: ingest goes on, the backlog drains."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.v1 import proxy_service_pb2
from tests.support.ingest_helpers import make_events
from tests.support.load import Load
from tests.support.long_variants import scaled
from tests.support.pg_cluster import PostgresCluster
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import assert_each_stored_once, row_count

# The log's cap: what the proxy takes in while the database is down, before it refuses.
WAL_CAP = scaled(2, 64) << 20
RECORDERS = 2
RATE = scaled(1000, 2000)


@pytest.mark.timeout(scaled(300, 1200))
def test_postgres_stopped_under_load_then_started_loses_nothing(
    postgres_cluster: PostgresCluster,
    tmp_path: Path,
    processes: list[ServeProcess],
    loads: list[Load],
) -> None:
    url = postgres_cluster.create_database()
    caps = ("--wal-segment-bytes", "65536", "--wal-max-bytes", str(WAL_CAP))
    proxy = serve(processes, tmp_path / "data", url, *caps)
    load = Load(proxy.address, tmp_path / "spool", RECORDERS, RATE)
    loads.append(load)
    poll(lambda: row_count(url) > 0, 60, "the first events to be stored")

    postgres_cluster.stop()
    try:
        # The proxy goes on acknowledging into its log, up to the log's cap.
        acked: list[str] = []
        with pytest.raises(grpc.RpcError) as refused:
            while True:
                batch = make_events(100)
                request = proxy_service_pb2.RecordBatchRequest(events=batch)
                response = proxy.stub.RecordBatch(request, timeout=30)
                assert response.result.accepted_count == 100
                acked += [event.id for event in batch]
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        full = re.search(r"write-ahead log is full \((\d+) of (\d+) bytes used\)",
                         refused.value.details() or "")  # fmt: skip
        assert full is not None, refused.value.details()
        # Refused at the cap, not before: the log's room was used (by these batches and by
        # the recorders' load, whose share varies with how the machine schedules them).
        used, cap = int(full[1]), int(full[2])
        assert cap == WAL_CAP and used > WAL_CAP // 2, full[0]
        assert acked
        # The other writer is not held up by the stopped database.
        last = acked[-1].encode()  # written in log order: all before it are written too
        poll(lambda: last in proxy.jsonl.read_bytes(), 120, "the JSON lines writer", every=0.2)
        assert set(acked) <= set(proxy.written_ids())
        health = health_pb2_grpc.HealthStub(proxy.channel)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        postgres_cluster.start()

    outcome = load.finish()  # the recorders spooled what was refused and replay it now
    expected = dict.fromkeys([*outcome.ids, *acked], 1)
    poll(lambda: row_count(url) == len(expected), 120, "the backlog to drain into PostgreSQL")
    assert proxy.stop(signal.SIGTERM) == 0
    assert proxy.process.stderr is not None
    assert "writer sql failed a batch" in proxy.process.stderr.read()
    for report in outcome.reports:
        assert report["drained"], report
        assert report["stats"]["dropped"] == {}, report
    assert_each_stored_once(url, list(expected))
