"""A real gRPC EventProxyService on a loopback port that keeps what it receives in memory.

It stores events by id (idempotent, like the proxy) and remembers the order of first
arrival, so recorder tests can assert exactly what was delivered.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc

from protoevents.v1 import event_pb2, proxy_service_pb2, proxy_service_pb2_grpc


class FakeProxy(proxy_service_pb2_grpc.EventProxyServiceServicer):
    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.events: dict[str, event_pb2.Event] = {}
        self.arrivals = 0
        self.batches = 0
        self.reject_types: set[str] = set()
        self.quarantine_types: set[str] = set()  # answered in `quarantined`, kept apart
        self.quarantined: dict[str, event_pb2.Event] = {}
        # After each acknowledgement, end the stream: OK, or UNAVAILABLE "idle" (an idle close).
        self.end_streams: grpc.StatusCode | None = None
        self.abort_code: grpc.StatusCode | None = None
        self.abort_details = ""  # default: "refused batch N"
        self.aborted = 0
        self.abort_limit: int | None = None  # abort this many batches, then take them again
        self.streams = 0
        self.linger = threading.Event()  # while clear, a stream to end waits before it ends
        self.linger.set()
        self.hold = threading.Event()  # while clear, acks wait (a slow proxy)
        self.hold.set()
        self._changed = threading.Condition()
        self._server: grpc.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeProxy:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        proxy_service_pb2_grpc.add_EventProxyServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def _store(self, events: list[event_pb2.Event]) -> proxy_service_pb2.BatchResult:
        result = proxy_service_pb2.BatchResult()
        with self._changed:
            self.batches += 1
            for index, event in enumerate(events):
                self.arrivals += 1
                if event.type in self.reject_types:
                    result.rejections.add(
                        index=index,
                        event_id=event.id,
                        reason=proxy_service_pb2.REJECTION_REASON_UNKNOWN_TYPE,
                        detail=f"unknown event type {event.type}",
                    )
                elif event.type in self.quarantine_types:
                    self.quarantined[event.id] = event
                    result.quarantined.add(
                        index=index, event_id=event.id, detail=f"unknown event type {event.type}"
                    )
                elif event.id in self.events:
                    result.duplicate_count += 1
                else:
                    self.events[event.id] = event
                    result.accepted_count += 1
            self._changed.notify_all()
        return result

    def Record(
        self,
        request_iterator: Iterator[proxy_service_pb2.RecordRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[proxy_service_pb2.RecordResponse]:
        with self._changed:
            self.streams += 1
        for request in request_iterator:
            if self.abort_code is not None and self.aborted != self.abort_limit:
                with self._changed:
                    self.aborted += 1
                details = self.abort_details or f"refused batch {request.sequence}"
                context.abort(self.abort_code, details)
            self.hold.wait()
            result = self._store(list(request.events))
            yield proxy_service_pb2.RecordResponse(sequence=request.sequence, result=result)
            if self.end_streams is not None:
                self.linger.wait()
            if self.end_streams is grpc.StatusCode.OK:
                return
            if self.end_streams is not None:
                context.abort(self.end_streams, "idle stream closed")

    def RecordBatch(
        self, request: proxy_service_pb2.RecordBatchRequest, context: grpc.ServicerContext
    ) -> proxy_service_pb2.RecordBatchResponse:
        return proxy_service_pb2.RecordBatchResponse(result=self._store(list(request.events)))

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until `count` distinct events are stored."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.events) >= count, timeout)

    def wait_for_batches(self, count: int, timeout: float = 30.0) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.batches >= count, timeout)

    def stored_ids(self) -> list[str]:
        with self._changed:
            return list(self.events)


def down_proxy() -> FakeProxy:
    """A proxy that has a port but is not serving yet."""
    proxy = FakeProxy().start()
    proxy.stop()
    return proxy
