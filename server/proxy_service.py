"""The gRPC face of ingest: EventProxyService on grpc.aio, with domain errors as status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from protoevents.proxy.access import denials as reasons
from protoevents.proxy.access.denials import Denials
from protoevents.proxy.access.interceptor import CALLER
from protoevents.proxy.admission import Admission, AdmissionRefusedError, Ticket
from protoevents.proxy.ingest import SOURCE_FORBIDDEN, Ingest
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.sources import SourceClaims
from protoevents.proxy.statuses import status_of
from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc

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
_IDLE = object()
# How long a refused stream's first request is waited for before the refusal is sent.
_REFUSE_READ_S = 1.0
_Request = TypeVar("_Request", bound=Message)


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """What a request that does not parse is handed to the servicer as."""

    detail: str


def lenient(message_class: type[_Request]) -> Callable[[bytes], _Request | MalformedRequest]:
    """A deserializer that hands bad bytes to the servicer (grpc would answer UNKNOWN)."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> _Request | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return MalformedRequest(
                f"the request is not a valid {name}: corrupt wire format, "
                "or a string field that is not UTF-8"
            )

    return parse


def add_proxy_service(servicer: EventProxyServicer, server: grpc.aio.Server) -> None:
    """Serve EventProxyService; a request that does not parse gets INVALID_ARGUMENT."""
    R = proxy_service_pb2  # noqa: N806
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Record": grpc.stream_stream_rpc_method_handler(
            servicer.Record,
            request_deserializer=lenient(R.RecordRequest),
            response_serializer=R.RecordResponse.SerializeToString,
        ),
        "RecordBatch": grpc.unary_unary_rpc_method_handler(
            servicer.RecordBatch,
            request_deserializer=lenient(R.RecordBatchRequest),
            response_serializer=R.RecordBatchResponse.SerializeToString,
        ),
    }
    name = R.DESCRIPTOR.services_by_name["EventProxyService"].full_name
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    server.add_registered_method_handlers(name, handlers)


class EventProxyServicer(proxy_service_pb2_grpc.EventProxyServiceServicer):
    """Thin adapter from EventProxyService to `Ingest`, admitting calls under `admission`'s
    limits and ending Record streams idle for `idle_stream_timeout_s` (status OK: a recorder
    opens a new one with its next batch)."""

    def __init__(
        self,
        ingest: Ingest,
        max_inflight_batches: int = 32,
        *,
        admission: Admission | None = None,
        idle_stream_timeout_s: float | None = None,
        metrics: Metrics | None = None,
        denials: Denials | None = None,
    ) -> None:
        self.ingest = ingest
        self.denials = denials
        self.max_inflight_batches = max_inflight_batches
        self.admission = admission or Admission(1_000_000, 1_000_000)
        self.idle_stream_timeout_s = idle_stream_timeout_s
        self.metrics = metrics

    async def _admit(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        requests: AsyncIterable[object] | None = None,
    ) -> Ticket:
        """A ticket for this call, or RESOURCE_EXHAUSTED naming the limit. A stream's first
        request is read before refusing it: grpc.aio clients whose write is still pending as
        the status arrives report INTERNAL instead of the status (grpc/grpc#36066)."""
        try:
            ticket = self.admission.admit(_peer(context))
        except AdmissionRefusedError as exc:
            if self.metrics is not None:
                self.metrics.ingest_refused.inc()
            if requests is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_REFUSE_READ_S):
                        await anext(aiter(requests), None)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        if self.metrics is not None:
            self.metrics.ingest_streams.set(self.admission.open)
        return ticket

    def _forbidden(
        self, claims: SourceClaims | None, result: proxy_service_pb2.BatchResult
    ) -> None:
        """Count and report the events of a batch rejected for their source."""
        if claims is None or self.denials is None:
            return
        forbidden = [r for r in result.rejections if r.reason == SOURCE_FORBIDDEN]
        if forbidden:
            who = f"identity {claims.identity!r}"
            message = f"{len(forbidden)} event(s) rejected: {forbidden[0].detail}"
            self.denials.deny(reasons.SOURCE_FORBIDDEN, who, message, len(forbidden))

    def _release(self, ticket: Ticket) -> None:
        self.admission.release(ticket)
        if self.metrics is not None:
            self.metrics.ingest_streams.set(self.admission.open)

    async def RecordBatch(
        self,
        request: proxy_service_pb2.RecordBatchRequest | MalformedRequest,
        context: grpc.aio.ServicerContext[
            proxy_service_pb2.RecordBatchRequest, proxy_service_pb2.RecordBatchResponse
        ],
    ) -> proxy_service_pb2.RecordBatchResponse:
        if isinstance(request, MalformedRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.detail)
        ticket = await self._admit(context)
        claims = _claims()
        try:
            result = await self.ingest.record(request, claims)
        except Exception as exc:
            code, message = status_of(exc)
            await context.abort(code, message)
        finally:
            self._release(ticket)
        self._forbidden(claims, result)
        return proxy_service_pb2.RecordBatchResponse(result=result)

    async def Record(
        self,
        request_iterator: AsyncIterable[proxy_service_pb2.RecordRequest | MalformedRequest],
        context: grpc.aio.ServicerContext[
            proxy_service_pb2.RecordRequest, proxy_service_pb2.RecordResponse
        ],
    ) -> AsyncIterator[proxy_service_pb2.RecordResponse]:
        """Reads and decides batches ahead while earlier ones are being persisted, up to
        `max_inflight_batches`; answers each, in order, once it is persisted."""
        ticket = await self._admit(context, request_iterator)
        try:
            async for response in self._record(request_iterator, context):
                yield response
        finally:
            self._release(ticket)

    async def _record(
        self,
        request_iterator: AsyncIterable[proxy_service_pb2.RecordRequest | MalformedRequest],
        context: grpc.aio.ServicerContext[
            proxy_service_pb2.RecordRequest, proxy_service_pb2.RecordResponse
        ],
    ) -> AsyncIterator[proxy_service_pb2.RecordResponse]:
        queue: asyncio.Queue[object] = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_inflight_batches)
        claims = _claims()

        async def pump() -> None:
            try:
                async for request in request_iterator:
                    if isinstance(request, MalformedRequest):
                        code = grpc.StatusCode.INVALID_ARGUMENT
                        queue.put_nowait(_Failure(code, request.detail))
                        return
                    await slots.acquire()
                    try:
                        result, persisted = self.ingest.submit(request, claims)
                    except Exception as exc:
                        code, message = status_of(exc)
                        queue.put_nowait(_Failure(code, f"batch {request.sequence}: {message}"))
                        return
                    self._forbidden(claims, result)
                    queue.put_nowait(_Batch(request.sequence, result, persisted))
            except Exception as exc:
                log.debug("Record stream read ended: %r", exc)
            finally:
                queue.put_nowait(_END)

        reader = asyncio.create_task(pump(), name="record-stream-reader")
        try:
            while True:
                item = await _next(queue, self.idle_stream_timeout_s)
                if item is _IDLE:
                    log.debug("ended a Record stream idle for %ss", self.idle_stream_timeout_s)
                    if self.metrics is not None:
                        self.metrics.idle_streams_closed.inc()
                    break
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


async def _next(queue: asyncio.Queue[object], idle_s: float | None) -> object:
    """The next item of `queue`, or _IDLE when none comes within `idle_s` seconds."""
    if idle_s is None or not queue.empty():
        return await queue.get()
    getter = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({getter}, timeout=idle_s)
    if getter in done:
        return getter.result()
    getter.cancel()
    # An item put as the wait ended is in the queue already (a cancelled get leaves it there).
    return queue.get_nowait() if not queue.empty() else _IDLE


def _claims() -> SourceClaims | None:
    """The sources the current call may claim (None: any)."""
    identity = CALLER.get()
    return None if identity is None else identity.sources


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The call's peer address ("" when the server cannot tell, as in grpcio-testing)."""
    try:
        return context.peer()
    except NotImplementedError:
        return ""
