"""A flipped byte in the middle of the log, seen by a restarted proxy: the records around it are
stored, the damage is counted and kept aside, and health says so without refusing ingest."""

from __future__ import annotations

import asyncio
from pathlib import Path

from grpc_health.v1 import health_pb2

from protoevents.proxy.app import run_proxy
from protoevents.v1 import proxy_service_pb2
from tests.support.ingest_helpers import MemoryWriter, make_events, proxy_settings, wait_until


def test_a_flipped_byte_mid_log_loses_only_its_batch_and_shows_in_health(tmp_path: Path) -> None:
    batches = [make_events(50) for _ in range(3)]

    async def fill() -> None:
        held = MemoryWriter("w", held=True)  # nothing leaves the log
        async with run_proxy(proxy_settings(tmp_path), writers=lambda s, e: [held]) as proxy:
            for batch in batches:
                await proxy.ingest.record(proxy_service_pb2.RecordBatchRequest(events=batch))
            await proxy.stop(grace=0)

    asyncio.run(fill())
    (segment,) = sorted((tmp_path / "wal").glob("*.wal"))
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # in the middle batch's record
    segment.write_bytes(bytes(data))

    async def restart() -> None:
        writer = MemoryWriter("w")
        async with run_proxy(proxy_settings(tmp_path), writers=lambda s, e: [writer]) as proxy:
            kept = [e.id for e in batches[0] + batches[2]]
            await wait_until(lambda: writer.ids == kept)
            assert proxy.metrics.wal_corrupt_bytes._value.get() > 0
            assert list((tmp_path / "wal" / "damaged").iterdir())
            status = {
                name: (
                    await proxy.health.Check(health_pb2.HealthCheckRequest(service=name), None)
                ).status
                for name in ("", "protoevents.wal", "protoevents.wal.integrity")
            }
            serving = health_pb2.HealthCheckResponse.SERVING
            assert status == {
                "": serving,
                "protoevents.wal": serving,
                "protoevents.wal.integrity": health_pb2.HealthCheckResponse.NOT_SERVING,
            }

    asyncio.run(restart())
