"""A flipped byte in a closed log segment that a running `serve`'s SQL writer has not read yet
(its PostgreSQL is stopped): once the database is back, the writer stores every intact record
before and after the damage exactly once, loses only the damaged one, which is copied aside,
logged naming its segment and shown in health, and goes on storing what comes next."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from protoevents.proxy import changelog
from protoevents.proxy.wal import HEADER
from protoevents.v1 import proxy_service_pb2
from tests.support.health import NOT_SERVING, SERVING, status
from tests.support.ingest_helpers import make_events
from tests.support.pg_cluster import PostgresCluster
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess
from tests.support.stored import assert_each_stored_once, row_count
from tests.support.wal import records_of

SEGMENT_BYTES = 64 << 10
BATCH = 50  # events per RecordBatch: one log record each
BEHIND = 24  # batches recorded while the writer is stuck: several segments of them


def _send(proxy: ServeProcess, count: int = BATCH) -> list[str]:
    batch = make_events(count)
    response = proxy.stub.RecordBatch(
        proxy_service_pb2.RecordBatchRequest(events=batch), timeout=10
    )
    assert response.result.accepted_count == count
    return [event.id for event in batch]


def _log_end(wal: Path) -> int:
    last = sorted(wal.glob("*.wal"))[-1]
    return int(last.stem) + last.stat().st_size


@pytest.mark.timeout(300)
def test_a_byte_flipped_in_a_segment_the_writer_has_not_read_loses_only_its_record(
    postgres_cluster: PostgresCluster, tmp_path: Path, processes: list[ServeProcess]
) -> None:
    url = postgres_cluster.create_database()
    wal = tmp_path / "data" / "wal"
    flags = ("--db", url, "--wal-segment-bytes", str(SEGMENT_BYTES), "--writer-stuck-after-s", "1")
    proxy = ServeProcess(tmp_path / "data", *flags, jsonl=False, follow_log=True)
    processes.append(proxy)
    stored = _send(proxy, 100)
    poll(lambda: row_count(url) == 100, 60, "the first events in PostgreSQL")

    postgres_cluster.stop()
    try:
        stored += _send(proxy)  # read by the SQL writer, which then retries it
        poll(lambda: status(proxy.channel, "protoevents.writer.sql") == NOT_SERVING, 60,
             "the SQL writer to be stuck")  # fmt: skip
        unread_from = _log_end(wal)  # the writer reads nothing more while it retries
        behind = [_send(proxy) for _ in range(BEHIND)]
        segments = sorted(wal.glob("*.wal"))
        closed = [s for s in segments[:-1] if int(s.stem) > unread_from]
        assert len(closed) >= 3, [s.name for s in segments]
        segment = closed[len(closed) // 2]  # records before it and after it, all unread
        data = bytearray(segment.read_bytes())
        records = records_of(segment)
        offset, length = records[len(records) // 2]
        payload = bytes(data[offset + HEADER.size : offset + length])
        lost = changelog.decode_ids(payload)
        assert lost in behind
        data[offset + HEADER.size + len(payload) // 2] ^= 0x01  # one bit of one byte
        segment.write_bytes(bytes(data))
    finally:
        postgres_cluster.start()

    kept = stored + [i for ids in behind if ids != lost for i in ids]
    poll(lambda: row_count(url) == len(kept), 120, "the records around the damage stored")
    copy = wal / "damaged" / f"{segment.name}.{offset}.bin"
    poll(copy.exists, 10, "the damaged bytes copied aside")
    assert copy.read_bytes() == bytes(data[offset : offset + length])  # the whole record
    assert status(proxy.channel, "protoevents.wal.integrity") == NOT_SERVING
    assert status(proxy.channel, "protoevents.wal") == SERVING
    poll(lambda: status(proxy.channel, "") == SERVING, 30, "ingest to be SERVING")
    assert status(proxy.channel, "protoevents.writer.sql") == SERVING

    after = _send(proxy)  # the writer's feed goes on past the damage
    poll(lambda: row_count(url) == len(kept) + BATCH, 60, "a batch sent after the damage")
    assert proxy.stop(signal.SIGTERM) == 0
    log = proxy.log()
    assert (
        f"write-ahead log {segment.name}: {length} bytes at offset {offset} are damaged "
        "(no valid record)" in log
    ), log[-3000:]
    assert "writer sql: its feed failed" not in log
    assert_each_stored_once(url, kept + after)
