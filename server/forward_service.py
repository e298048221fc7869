"""The gRPC face of forwarding: EventForwardService on grpc.aio, answering each request of a
stream in order once it is persisted, with domain errors as status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from protoevents.proxy.access import denials as reasons
from protoevents.proxy.access.denials import Denials
from protoevents.proxy.access.interceptor import CALLER
from protoevents.proxy.forwarded import ForwardedChanges, Request, Response, SiteForbiddenError
from protoevents.proxy.ingest import Persisted
from protoevents.proxy.proxy_service import MalformedRequest, lenient
from protoevents.proxy.statuses import status_of
from protoevents.v1 import forward_service_pb2, forward_service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE = forward_service_pb2.DESCRIPTOR.services_by_name["EventForwardService"].full_name


@dataclass(frozen=True, slots=True)
class _Failure:
    code: grpc.StatusCode
    message: str


@dataclass(frozen=True, slots=True)
class _Decided:
    response: Response
    persisted: Persisted | None


_END = object()
_STOPPED = _Failure(grpc.StatusCode.UNAVAILABLE, "the proxy is stopping; resend once it is back")


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
        queue: asyncio.Queue[object] = asyncio.Queue()
        slots = asyncio.Semaphore(self.max_inflight)
        identity = CALLER.get()

        async def pump() -> None:
            try:
                async for request in requests:
                    if isinstance(request, MalformedRequest):
                        queue.put_nowait(_Failure(grpc.StatusCode.INVALID_ARGUMENT, request.detail))
                        return
                    await slots.acquire()
                    try:
                        response, persisted = self.changes.submit(request, identity)
                    except Exception as exc:
                        self._refused(exc)
                        code, message = status_of(exc)
                        queue.put_nowait(_Failure(code, f"request {request.sequence}: {message}"))
                        return
                    queue.put_nowait(_Decided(response, persisted))
            except Exception as exc:
                log.debug("Forward stream read ended: %r", exc)
            finally:
                queue.put_nowait(_END)

        reader = asyncio.create_task(pump(), name="forward-stream-reader")
        try:
            while (item := await self._next(queue, reader)) is not _END:
                if isinstance(item, _Failure):
                    await context.abort(item.code, item.message)
                assert isinstance(item, _Decided)
                if item.persisted is not None:
                    try:
                        await item.persisted
                    except Exception as exc:
                        code, message = status_of(exc)
                        await context.abort(code, f"request {item.response.sequence}: {message}")
                yield item.response
                slots.release()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _next(self, queue: asyncio.Queue[object], reader: asyncio.Task[None]) -> object:
        """The next decided request; once the proxy stops, no more are read, and what was
        decided is answered before the stream ends UNAVAILABLE (the sender resends the rest
        to the proxy when it is back)."""
        if not self.stopping.is_set() and queue.empty():
            getter = asyncio.ensure_future(queue.get())
            stopping = asyncio.ensure_future(self.stopping.wait())
            await asyncio.wait((getter, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if getter.done():
                return getter.result()
            getter.cancel()
        if self.stopping.is_set():
            reader.cancel()
            item = queue.get_nowait() if not queue.empty() else _END
            return _STOPPED if item is _END else item
        return queue.get_nowait()

    def _refused(self, exc: Exception) -> None:
        """Count and report a request refused for a site its caller may not forward for."""
        if isinstance(exc, SiteForbiddenError) and self.denials is not None:
            identity = CALLER.get()
            who = f"identity {identity.name!r}" if identity is not None else "a caller"
            self.denials.deny(reasons.SITE_FORBIDDEN, who, f"Forward: {exc}")
