"""The write-ahead log out of room, by its size cap or a full disk (a small tmpfs)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy.engine import Engine

from protoevents.proxy.app import run_proxy
from protoevents.proxy.changes import Change
from protoevents.proxy.config import Settings
from protoevents.proxy.writers.sql import SqlWriter
from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from tests.support.ingest_helpers import make_events, proxy_settings, wait_until
from tests.support.stored import stored_counts

Call = asyncio.Future[object]


class HeldSqlWriter:
    """The SQL writer fallen behind: it writes nothing until `gate` opens."""

    def __init__(self, engine: Engine) -> None:
        self.inner = SqlWriter(engine)
        self.name = self.inner.name
        self.gate = asyncio.Event()

    async def write(self, changes: Sequence[Change]) -> None:
        await self.gate.wait()
        await self.inner.write(changes)

    async def close(self) -> None:
        await self.inner.close()


@pytest.mark.parametrize("room", ["size cap", "full disk"])
def test_a_log_out_of_room_answers_resource_exhausted_and_resumes_once_the_writer_drains(
    room: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/events.db"
    if room == "size cap":
        settings = proxy_settings(
            tmp_path / "data", db=url, wal_segment_bytes=64 << 10, wal_max_bytes=256 << 10
        )
        refusal = "write-ahead log is full ("
    else:
        disk: Path = request.getfixturevalue("small_disk")
        # The cap (4 GiB) is far beyond the disk.
        settings = proxy_settings(disk, db=url, wal_segment_bytes=64 << 10)
        refusal = "the disk of the write-ahead log is full (No space left on device)"
    held: list[HeldSqlWriter] = []

    def writers(settings: Settings, engine: Engine) -> list[HeldSqlWriter]:
        held.append(HeldSqlWriter(engine))
        return held

    acked = asyncio.run(fill_then_drain(settings, writers, held, refusal))
    assert stored_counts(url) == dict.fromkeys(acked, 1)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def fill_then_drain(
    settings: Settings, writers: object, held: list[HeldSqlWriter], refusal: str
) -> list[str]:
    """Fill the log with the writer held, check the refusal, release the writer and check
    that ingest resumes. Returns the ids acknowledged."""
    async with run_proxy(settings, writers=writers) as proxy:  # type: ignore[arg-type]
        channel = grpc.aio.insecure_channel(proxy.address)
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)

        async def record(count: int, *, held: bool = False) -> tuple[list[str], Call]:
            """Send a batch; wait until it is answered (or, with `held`, until the log has no
            room left while the call waits: a write the disk refused is held, unanswered)."""
            batch = make_events(count)
            call = asyncio.ensure_future(
                stub.RecordBatch(proxy_service_pb2.RecordBatchRequest(events=batch))
            )
            await wait_until(lambda: call.done() or (held and proxy.wal.free_bytes() <= 0), 30)
            return [event.id for event in batch], call

        acked: list[str] = []
        holding: list[tuple[list[str], Call]] = []
        while True:
            ids, call = await record(100, held=True)
            if not call.done():
                holding.append((ids, call))  # never acknowledged before it is on disk
                ids, call = await record(100)  # and the next batch is refused at once
                break
            if call.exception() is not None:
                break
            acked += ids
        error = call.exception()
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert refusal in (error.details() or "")
        assert len(acked) >= 20
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest())
        # At its cap the log is back-pressure (it persists again as soon as a writer catches
        # up); on a full disk the proxy cannot persist: health says so.
        disk_full = refusal.startswith("the disk")
        expected = NOT_SERVING if disk_full else SERVING
        assert answer.status == expected, refusal

        held[0].gate.set()  # the writer catches up; its segments are deleted
        for ids, call in holding:
            response = await asyncio.wait_for(call, 60)
            assert response.result.accepted_count == 100  # type: ignore[attr-defined]
            acked += ids
        resumed: list[str] = []

        async def accepted() -> bool:
            ids, call = await record(10)
            try:
                await call
            except grpc.aio.AioRpcError as refused:
                assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                return False
            resumed.extend(ids)
            return True

        async with asyncio.timeout(60):
            while not await accepted():
                await asyncio.sleep(0.05)
        acked += resumed
        async with asyncio.timeout(10):  # it persists again, and health says so
            while (await health.Check(health_pb2.HealthCheckRequest())).status != SERVING:
                await asyncio.sleep(0.02)
        await channel.close()
    return acked
