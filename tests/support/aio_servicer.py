"""Drive grpc.aio servicers with grpcio-testing.

grpc_testing calls servicer methods synchronously, on its own threads, with a synchronous
context. `AioBridge` runs an asyncio loop on a thread and presents an async servicer to
grpc_testing as a synchronous one: each call runs the servicer's coroutine (or async
generator) on that loop, request streams are read from grpc_testing as an async iterator, and
`await context.abort(...)` reaches grpc_testing's context, which records the status.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc
import grpc_testing
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

T = TypeVar("T")
_END = object()


class AioContext:
    """The async face of grpc_testing's servicer context (what our servicers use of it)."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._context.abort(code, details)  # records the status, then raises

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class AioBridge:
    """An event loop on its own thread, and servicers adapted for grpc_testing on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.cleanups: list[Callable[[], Coroutine[Any, Any, object]]] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run `coroutine` on the bridge's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        """Run the cleanups (last added first) on the loop, then stop it."""
        for cleanup in reversed(self.cleanups):
            self.run(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def server(self, service: ServiceDescriptor, servicer: object) -> grpc_testing.Server:
        """A grpc_testing server of `servicer` (a grpc.aio servicer) for `service`."""
        return grpc_testing.server_from_dictionary(
            {service: self._adapt(service, servicer)}, grpc_testing.strict_real_time()
        )

    def _adapt(self, service: ServiceDescriptor, servicer: object) -> object:
        adapted = type(f"Sync{type(servicer).__name__}", (), {})()
        for method in service.methods:
            handler = getattr(servicer, method.name)
            setattr(adapted, method.name, self._method(method, handler))
        return adapted

    def _method(self, method: MethodDescriptor, handler: Callable[..., Any]) -> Callable[..., Any]:
        streaming_out = method.server_streaming

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            if method.client_streaming:
                request = self._requests(request)
            outcome = handler(request, AioContext(context))
            if streaming_out:
                return self._responses(outcome)
            return self.run(outcome, timeout=60)

        return call

    async def _arequests(self, requests: Iterator[Any]) -> AsyncIterator[Any]:
        while (request := await asyncio.to_thread(next, requests, _END)) is not _END:
            yield request

    def _requests(self, requests: Iterator[Any]) -> AsyncIterator[Any]:
        return self._arequests(requests)

    def _responses(self, responses: AsyncIterator[Any]) -> Iterator[Any]:
        async def step() -> Any:
            try:
                return await anext(responses)
            except StopAsyncIteration:
                return _END

        try:
            while (response := self.run(step(), timeout=60)) is not _END:
                yield response
        finally:
            self.run(responses.aclose())  # type: ignore[attr-defined]


def method(service: ServiceDescriptor, name: str) -> MethodDescriptor:
    return service.methods_by_name[name]
