"""The gRPC face of ingest: EventProxyService on grpc.aio, with domain errors as status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any

import grpc

from protoevents.proxy.access import denials as reasons
from protoevents.proxy.access.denials import Denials
from protoevents.proxy.access.interceptor import CALLER
from protoevents.proxy.admission import Admission, AdmissionRefusedError, Ticket
from protoevents.proxy.in_order import Ending, MalformedRequest, answered_in_order, lenient
from protoevents.proxy.ingest import SOURCE_FORBIDDEN, Ingest, Persisted
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.sources import SourceClaims
from protoevents.proxy.statuses import status_of
from protoevents.v1 import proxy_service_pb2, proxy_service_pb2_grpc

log = logging.getLogger(__name__)


# How long a refused stream's first request is waited for before the refusal is sent.
_REFUSE_READ_S = 1.0


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
            answers = answered_in_order(
                request_iterator,
                context,
                self._decide(_claims()),
                lambda request: f"batch {request.sequence}",
                max_inflight=self.max_inflight_batches,
                ending=Ending(self.idle_stream_timeout_s, self._idle),
            )
            async for response in answers:
                yield response
        finally:
            self._release(ticket)

    def _decide(
        self, claims: SourceClaims | None
    ) -> Callable[
        [proxy_service_pb2.RecordRequest],
        tuple[proxy_service_pb2.RecordResponse, Persisted | None],
    ]:
        def decide(
            request: proxy_service_pb2.RecordRequest,
        ) -> tuple[proxy_service_pb2.RecordResponse, Persisted | None]:
            result, persisted = self.ingest.submit(request, claims)
            self._forbidden(claims, result)
            response = proxy_service_pb2.RecordResponse(sequence=request.sequence, result=result)
            return response, persisted

        return decide

    def _idle(self) -> None:
        log.debug("ended a Record stream idle for %ss", self.idle_stream_timeout_s)
        if self.metrics is not None:
            self.metrics.idle_streams_closed.inc()


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
