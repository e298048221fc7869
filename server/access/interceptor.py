"""The server interceptor that holds every call to the access file: who calls (callers.py),
whether their identity has the role the method needs; the identity is handed to the servicer
in `CALLER` (the sources a recording call may claim, the sites a forwarding one may forward
for). Health and reflection stay open."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import grpc

from protoevents.proxy.access import denials as reasons
from protoevents.proxy.access.callers import CallRefusedError, identify
from protoevents.proxy.access.denials import Denials
from protoevents.proxy.access.policy import Identity
from protoevents.proxy.access.reloading import AccessFile

PROXY = "protoevents.v1.EventProxyService"
QUERY = "protoevents.v1.EventQueryService"
FORWARD = "protoevents.v1.EventForwardService"
# The role each method needs; a method of no open service that is not listed needs admin.
METHOD_ROLES = {
    f"/{PROXY}/Record": "record",
    f"/{PROXY}/RecordBatch": "record",
    f"/{QUERY}/ListEvents": "query",
    f"/{QUERY}/GetEvent": "query",
    f"/{QUERY}/ListEventTypes": "query",
    f"/{QUERY}/WatchEvents": "watch",
    f"/{FORWARD}/Forward": "forward",
}
OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
# The identity of the current call (None without an access file: any source, any site).
CALLER: ContextVar[Identity | None] = ContextVar("caller", default=None)
# How long a refused stream's first request is waited for (grpc/grpc#36066, as admission).
_REFUSE_READ_S = 1.0

Context = grpc.aio.ServicerContext[Any, Any]


def role_of(method: str) -> str | None:
    """The role `method` needs (None for the open services)."""
    service = method.lstrip("/").partition("/")[0]
    return None if service in OPEN_SERVICES else METHOD_ROLES.get(method, "admin")


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without the identity and role they need: UNAUTHENTICATED for missing or
    bad credentials, PERMISSION_DENIED naming the identity and the role."""

    def __init__(self, access: AccessFile, denials: Denials) -> None:
        self.access = access
        self.denials = denials

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        role = role_of(method)
        if handler is None or role is None:
            return handler
        return _guarded(handler, lambda context: self.decide(method, role, context))

    def decide(self, method: str, role: str, context: Context) -> Identity:
        """The identity of a call it may make. Raises CallRefusedError, counted and
        reported, when it may not be made."""
        try:
            identity = identify(self.access.policy(), context)
            if role not in identity.roles:
                raise CallRefusedError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    reasons.MISSING_ROLE,
                    f"identity {identity.name!r}",
                    f"identity {identity.name!r} lacks role {role!r}, which {method} needs "
                    f"(its roles: {', '.join(sorted(identity.roles)) or 'none'})",
                )
        except CallRefusedError as refusal:
            self.denials.deny(refusal.reason, refusal.who, f"{method}: {refusal.message}")
            raise
        return identity


def _guarded(
    handler: grpc.RpcMethodHandler[Any, Any], decide: Callable[[Context], Identity]
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with `decide` run first: a CallRefusedError aborts the call with its status."""
    replace: Callable[..., grpc.RpcMethodHandler[Any, Any]] = handler._replace  # type: ignore[attr-defined]
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return replace(**{kind: _wrapped(behavior, decide, kind.startswith("stream"))})
    return handler


def _wrapped(
    behavior: Callable[..., Any],
    decide: Callable[[Context], Identity],
    reads: bool,
) -> Callable[..., Any]:
    """`behavior` guarded, of its own kind: a plain function stays one (grpc.aio runs those
    on its thread pool), a coroutine a coroutine, an async generator an async generator.
    `reads`: the call streams requests (read one before refusing)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            CALLER.set(await _decided(decide, context, request if reads else None))
            async for response in behavior(request, context):
                yield response

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def unary(request: Any, context: Context) -> Any:
            # Each call runs in a task of its own, with a copy of the context: no reset.
            CALLER.set(await _decided(decide, context, request if reads else None))
            return await behavior(request, context)

        return unary

    def blocking(request: Any, context: Any) -> Any:
        try:
            decide(context)
        except CallRefusedError as refusal:
            context.abort(refusal.code, refusal.message)
        return behavior(request, context)

    return blocking


async def _decided(
    decide: Callable[[Context], Identity], context: Context, requests: Any
) -> Identity:
    """The identity `decide` allows the call, or the call aborted with its refusal."""
    try:
        return decide(context)
    except CallRefusedError as refusal:
        await _refuse(context, refusal, requests)
        raise  # context.abort raised already


async def _refuse(context: Context, refusal: CallRefusedError, requests: Any) -> None:
    """Abort with the refusal's status; a stream's first request is read first (grpc.aio
    clients with a write pending report INTERNAL instead of the status, grpc/grpc#36066)."""
    if isinstance(requests, AsyncIterable):
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_REFUSE_READ_S):
                await anext(aiter(requests), None)
    await context.abort(refusal.code, refusal.message)
