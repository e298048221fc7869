"""The gRPC face of forwarding: EventForwardService on grpc.aio, answering each request of a
stream in order once it is persisted, with domain errors as status codes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import grpc

from protoevents.proxy.access import denials as reasons
from protoevents.proxy.access.denials import Denials
from protoevents.proxy.access.interceptor import CALLER
from protoevents.proxy.forwarded import ForwardedChanges, Request, Response, SiteForbiddenError
from protoevents.proxy.in_order import Ending, MalformedRequest, answered_in_order, lenient
from protoevents.v1 import forward_service_pb2, forward_service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE = forward_service_pb2.DESCRIPTOR.services_by_name["EventForwardService"].full_name


def add_forward_service(servicer: EventForwardServicer, server: grpc.aio.Server) -> None:
    """Serve EventForwardService; a request that does not parse gets INVALID_ARGUMENT."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Forward": grpc.stream_stream_rpc_method_handler(
            servicer.Forward,
            request_deserializer=lenient(forward_service_pb2.ForwardRequest),
            response_serializer=forward_service_pb2.ForwardResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)


class EventForwardServicer(forward_service_pb2_grpc.EventForwardServiceServicer):
    """Reads and decides a stream's requests ahead while earlier ones are being persisted,
    up to `max_inflight` of them; answers each, in order, once it is persisted. A request it
    refuses ends the stream with the refusal's status (the sender resends from there)."""

    def __init__(
        self,
        changes: ForwardedChanges,
        max_inflight: int = 32,
        denials: Denials | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.changes = changes
        self.max_inflight = max_inflight
        self.denials = denials
        # Set when the proxy stops: streams answer what they decided, then end UNAVAILABLE.
        self.stopping = stopping or asyncio.Event()

    async def Forward(
        self,
        requests: AsyncIterable[Request | MalformedRequest],
        context: grpc.aio.ServicerContext[Request, Response],
    ) -> AsyncIterator[Response]:
        identity = CALLER.get()
        answers = answered_in_order(
            requests,
            context,
            lambda request: self.changes.submit(request, identity),
            lambda request: f"request {request.sequence}",
            max_inflight=self.max_inflight,
            ending=Ending(stopping=self.stopping),
            on_refused=self._refused,
        )
        async for response in answers:
            yield response

    def _refused(self, exc: Exception) -> None:
        """Count and report a request refused for a site its caller may not forward for."""
        if isinstance(exc, SiteForbiddenError) and self.denials is not None:
            identity = CALLER.get()
            who = f"identity {identity.name!r}" if identity is not None else "a caller"
            self.denials.deny(reasons.SITE_FORBIDDEN, who, f"Forward: {exc}")
