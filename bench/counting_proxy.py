"""An EventProxyService that only counts events: the far end for recorder benchmarks.

Run as `python -m bench.counting_proxy`; prints `listening on HOST:PORT`, then serves until
killed. Runs in its own process so that it does not share the recorder's interpreter lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc


class CountingProxy(proxy_service_pb2_grpc.EventProxyServiceServicer):
    def __init__(self) -> None:
        self.events = 0

    async def Record(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[proxy_service_pb2.RecordRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> AsyncIterator[proxy_service_pb2.RecordResponse]:
        async for request in request_iterator:
            count = len(request.events)
            self.events += count
            yield proxy_service_pb2.RecordResponse(
                sequence=request.sequence,
                result=proxy_service_pb2.BatchResult(accepted_count=count),
            )


async def main() -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    proxy_service_pb2_grpc.add_EventProxyServiceServicer_to_server(CountingProxy(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main())
