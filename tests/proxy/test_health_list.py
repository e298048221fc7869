"""grpc.health.v1.Health/List, which reflection advertises: every service's status."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from protoevents.proxy.app import run_proxy
from tests.support.ingest_helpers import proxy_settings


def test_health_list_answers_every_service_status(tmp_path: Path) -> None:
    async def main() -> None:
        async with run_proxy(proxy_settings(tmp_path)) as proxy:
            channel = grpc.aio.insecure_channel(proxy.address)
            health = health_pb2_grpc.HealthStub(channel)
            listed = await health.List(health_pb2.HealthListRequest(), timeout=10)
            statuses = {name: answer.status for name, answer in listed.statuses.items()}
            serving = health_pb2.HealthCheckResponse.SERVING
            for name in ("", "protoevents.v1.EventProxyService", "protoevents.wal"):
                assert statuses[name] == serving, statuses
            for name, status in statuses.items():  # the same as Check says, one by one
                request = health_pb2.HealthCheckRequest(service=name)
                assert (await health.Check(request, timeout=10)).status == status
            await channel.close()

    asyncio.run(main())
