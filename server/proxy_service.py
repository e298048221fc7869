"""The gRPC face of ingest: EventProxyService on grpc.aio, with domain errors as status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

import grpc

from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc
from server.ingest import Ingest
from server.validation import MalformedBatchError
from server.wal import LogFull

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Failure:
    code: grpc.StatusCode
    message: str


@dataclass(frozen=True, slots=True)
class _Batch:
    sequence: int
    result: proxy_service_pb2.BatchResult
    persisted: asyncio.Future[int] | None


_END = object()


def status_of(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a domain error is answered with."""
    if isinstance(exc, MalformedBatchError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, LogFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    log.error("ingest failed", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "the proxy could not persist the batch; retry later"


class EventProxyServicer(proxy_service_pb2_grpc.EventProxyServiceServicer):
    """Thin adapter from EventProxyService to `Ingest`."""

    def __init__(self, ingest: Ingest, max_inflight_batches: int = 32) -> None:
        self.ingest = ingest
        self.max_inflight_batches = max_inflight_batches

    async def RecordBatch(
        self,
        request: proxy_service_pb2.RecordBatchRequest,
        context: grpc.aio.ServicerContext[
            proxy_service_pb2.RecordBatchRequest, proxy_service_pb2.RecordBatchResponse
        ],
    ) -> proxy_service_pb2.RecordBatchResponse:
        try:
            result = await self.ingest.record(request)
        except Exception as exc:
            code, message = status_of(exc)
            await context.abort(code, message)
        return proxy_service_pb2.RecordBatchResponse(result=result)

    async def Record(
        self,
        request_iterator: AsyncIterable[proxy_service_pb2.RecordRequest],
        context: grpc.aio.ServicerContext[
            proxy_service_pb2.RecordRequest, proxy_service_pb2.RecordResponse
        ],
    ) -> AsyncIterator[proxy_service_pb2.RecordResponse]:
        """Reads and decides batches ahead while earlier ones are being persisted, up to
        `max_inflight_batches`; answers each, in order, once it is persisted."""
        queue: asyncio.Queue[object] = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_inflight_batches)

        async def pump() -> None:
            try:
                async for request in request_iterator:
                    await slots.acquire()
                    try:
                        result, persisted = self.ingest.submit(request)
                    except Exception as exc:
                        code, message = status_of(exc)
                        queue.put_nowait(_Failure(code, f"batch {request.sequence}: {message}"))
                        return
                    queue.put_nowait(_Batch(request.sequence, result, persisted))
            except Exception as exc:
                log.debug("Record stream read ended: %r", exc)
            finally:
                queue.put_nowait(_END)

        reader = asyncio.create_task(pump(), name="record-stream-reader")
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    await context.abort(item.code, item.message)
                assert isinstance(item, _Batch)
                sequence, result, persisted = item.sequence, item.result, item.persisted
                if persisted is not None:
                    try:
                        await persisted
                    except Exception as exc:
                        code, message = status_of(exc)
                        await context.abort(code, f"batch {sequence}: {message}")
                yield proxy_service_pb2.RecordResponse(sequence=sequence, result=result)
                slots.release()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
