"""Syslog collectors for the tests: a UDP one, an octet-counting TCP (or TLS) one, and a
blocking read of a writer's stream until given events have come."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Sequence
from typing import Any

from protoevents.v1 import event_pb2


class UdpCollector(asyncio.DatagramProtocol):
    """Keeps every datagram received on a loopback port."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    @classmethod
    async def start(cls) -> UdpCollector:
        loop = asyncio.get_running_loop()
        transport, collector = await loop.create_datagram_endpoint(cls, local_addr=("127.0.0.1", 0))
        collector.port = transport.get_extra_info("sockname")[1]
        return collector

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.datagrams.append(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpCollector:
    """Reads octet-counted frames (RFC 6587) on a loopback port; `stop` closes the server
    and every connection, `start` listens again on the same port (a collector restart)."""

    def __init__(self, context: ssl.SSLContext | None = None) -> None:
        self.context = context
        self.messages: list[bytes] = []
        self.raw = bytearray()
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    async def start(self) -> TcpCollector:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while True:
                length = await reader.readuntil(b" ")
                message = await reader.readexactly(int(length[:-1]))
                self.raw += length + message
                self.messages.append(message)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            self._handlers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def stop(self) -> None:
        """Stop listening and close every connection, as a collector going down does;
        returns once the connections are closed."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        async with asyncio.timeout(10):
            while self._handlers:
                await asyncio.sleep(0.005)


def receive_all(collector: socket.socket, events: Sequence[event_pb2.Event]) -> None:
    """Accept a syslog writer's TCP connection on `collector` and read until every event's id
    has come."""
    connection, _ = collector.accept()
    with connection:
        received = b""
        connection.settimeout(60)
        while not all(e.id.encode() in received for e in events):
            chunk = connection.recv(65536)
            assert chunk, "the writer closed the connection before sending every event"
            received += chunk
