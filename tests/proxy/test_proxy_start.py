"""A proxy that fails to start closes what it opened, so the next start on the same data
directory works and loses nothing."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from protoevents.proxy.app import run_proxy, start_proxy
from protoevents.proxy.ownership import AddressInUseError
from protoevents.v1 import proxy_service_pb2
from tests.support.ingest_helpers import MemoryWriter, make_events, proxy_settings, wait_until


def test_a_start_that_cannot_bind_closes_what_it_opened_and_the_next_start_works(
    tmp_path: Path,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    first = MemoryWriter("w", held=True)
    events = make_events(5)

    async def fail_then_start() -> None:
        async with run_proxy(proxy_settings(tmp_path), writers=lambda s, e: [first]) as proxy:
            await proxy.ingest.record(proxy_service_pb2.RecordBatchRequest(events=events))
            await proxy.stop(grace=0)  # the events stay in the log: the writer is held
        refused = MemoryWriter("w", held=True)
        with pytest.raises(AddressInUseError, match=f"address 127.0.0.1:{port} is in use"):
            await start_proxy(
                proxy_settings(tmp_path, listen=f"127.0.0.1:{port}"),
                writers=lambda s, e: [refused],
            )
        assert refused.closed  # its feed was stopped and the writer closed
        again = MemoryWriter("w")
        async with run_proxy(proxy_settings(tmp_path), writers=lambda s, e: [again]):
            await wait_until(lambda: again.ids == [e.id for e in events])

    try:
        asyncio.run(fail_then_start())
    finally:
        taken.close()
