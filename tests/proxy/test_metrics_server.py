"""The metrics server of an in-process proxy: it starts and stops with the proxy, a failed
start closes it, and the watchers gauge and `/healthz` follow the proxy."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from protoevents.proxy.app import run_proxy, start_proxy
from protoevents.proxy.ownership import AddressInUseError
from protoevents.v1 import query_service_pb2, query_service_pb2_grpc
from tests.support.ingest_helpers import MemoryWriter, proxy_settings, wait_until
from tests.support.scrape import healthz, scrape, value


def test_it_serves_while_the_proxy_runs_and_closes_with_it(tmp_path: Path) -> None:
    async def scenario() -> str:
        settings = proxy_settings(tmp_path, metrics_listen="127.0.0.1:0")
        async with run_proxy(settings) as proxy:
            assert proxy.metrics_server is not None
            base = f"http://{proxy.metrics_server.address}"
            code, body = await asyncio.to_thread(healthz, base + "/healthz")
            assert (code, body["status"]) == (200, "SERVING")
            async with grpc.aio.insecure_channel(proxy.address) as channel:
                stub = query_service_pb2_grpc.EventQueryServiceStub(channel)
                call = stub.WatchEvents(query_service_pb2.WatchEventsRequest())
                await wait_until(lambda: len(proxy.hub) == 1)
                page = await asyncio.to_thread(scrape, base + "/metrics")
                assert value(page, "protoevents_watchers") == 1
                call.cancel()
            await wait_until(lambda: len(proxy.hub) == 0)
            page = await asyncio.to_thread(scrape, base + "/metrics")
            assert value(page, "protoevents_watchers") == 0
            with pytest.raises(urllib.error.HTTPError) as caught:
                await asyncio.to_thread(urllib.request.urlopen, base + "/other", timeout=10)
            assert caught.value.code == 404
            caught.value.close()
            await proxy.stop(grace=0)
            # What /healthz answered while the proxy drained:
            assert proxy.board.report.problems == ("the proxy is stopping",)
            assert not proxy.board.report.serving
            return base

    base = asyncio.run(scenario())
    with pytest.raises(urllib.error.URLError):  # the port is closed with the proxy
        urllib.request.urlopen(base + "/metrics", timeout=10)


def test_a_start_that_fails_closes_the_metrics_server_and_one_it_cannot_bind_stops_it(
    tmp_path: Path,
) -> None:
    with socket.socket() as taken, socket.socket() as metrics_port:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics_port.bind(("127.0.0.1", 0))
        free = metrics_port.getsockname()[1]
        metrics_port.close()  # free again: the proxy binds it

        async def scenario() -> None:
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            writer = MemoryWriter("w")
            settings = proxy_settings(tmp_path, listen=address, metrics_listen=f"127.0.0.1:{free}")
            with pytest.raises(AddressInUseError, match=f"address {address} is in use"):
                await start_proxy(settings, writers=lambda s, e: [writer])
            assert writer.closed
            with socket.socket() as probe:  # the failed start let the metrics port go
                probe.bind(("127.0.0.1", free))

            writer = MemoryWriter("w")
            settings = proxy_settings(tmp_path, metrics_listen=address)
            with pytest.raises(AddressInUseError, match=f"metrics_listen: address {address}"):
                await start_proxy(settings, writers=lambda s, e: [writer])
            assert writer.closed

        asyncio.run(scenario())
