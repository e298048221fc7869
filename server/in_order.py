"""The answering loop of the ingest streams (Record, Forward): requests read and decided ahead
while earlier ones are being persisted, each answered in order once it is persisted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from protoevents.proxy.statuses import status_of

log = logging.getLogger(__name__)

Request = TypeVar("Request", bound=Message)
Answer = TypeVar("Answer")


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """What a request that does not parse is handed to the servicer as."""

    detail: str


def lenient(message_class: type[Request]) -> Callable[[bytes], Request | MalformedRequest]:
    """A deserializer that hands bad bytes to the servicer (grpc would answer UNKNOWN)."""
    name = message_class.DESCRIPTOR.full_name

    def parse(data: bytes) -> Request | MalformedRequest:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return MalformedRequest(
                f"the request is not a valid {name}: corrupt wire format, "
                "or a string field that is not UTF-8"
            )

    return parse


@dataclass(frozen=True, slots=True)
class _Failure:
    code: grpc.StatusCode
    message: str


@dataclass(frozen=True, slots=True)
class _Decided(Generic[Answer]):
    label: str
    answer: Answer
    persisted: Awaitable[int] | None


_END = object()
_IDLE = object()


@dataclass(frozen=True, slots=True)
class Ending:
    """When a stream ends by itself: after `idle_s` seconds without a request (status OK,
    `on_idle` called), or once `stopping` is set (what was decided is answered, then
    UNAVAILABLE saying `stopping_message`)."""

    idle_s: float | None = None
    on_idle: Callable[[], None] | None = None
    stopping: asyncio.Event | None = None
    stopping_message: str = "the proxy is stopping; resend once it is back"


async def answered_in_order(
    requests: AsyncIterable[Request | MalformedRequest],
    context: grpc.aio.ServicerContext[Any, Any],
    decide: Callable[[Request], tuple[Answer, Awaitable[int] | None]],
    label: Callable[[Request], str],
    *,
    max_inflight: int,
    ending: Ending | None = None,
    on_refused: Callable[[Exception], None] | None = None,
) -> AsyncIterator[Answer]:
    """Decide each request (`decide` returns its answer and what to await before sending
    it), up to `max_inflight` ahead of the answers; yield the answers in order. A request
    `decide` refuses, or whose persistence fails, ends the stream with its status, the message
    starting with `label(request)`; a malformed one with INVALID_ARGUMENT."""
    ending = ending or Ending()
    queue: asyncio.Queue[object] = asyncio.Queue()
    slots = asyncio.Semaphore(max_inflight)

    async def pump() -> None:
        try:
            async for request in requests:
                if isinstance(request, MalformedRequest):
                    queue.put_nowait(_Failure(grpc.StatusCode.INVALID_ARGUMENT, request.detail))
                    return
                await slots.acquire()
                try:
                    answer, persisted = decide(request)
                except Exception as exc:
                    if on_refused is not None:
                        on_refused(exc)
                    code, message = status_of(exc)
                    queue.put_nowait(_Failure(code, f"{label(request)}: {message}"))
                    return
                queue.put_nowait(_Decided(label(request), answer, persisted))
        except Exception as exc:
            log.debug("stream read ended: %r", exc)
        finally:
            queue.put_nowait(_END)

    reader = asyncio.create_task(pump(), name="stream-reader")
    try:
        while True:
            item = await _next(queue, reader, ending)
            if item is _IDLE:
                if ending.on_idle is not None:
                    ending.on_idle()
                break
            if item is _END:
                break
            if isinstance(item, _Failure):
                await context.abort(item.code, item.message)
            assert isinstance(item, _Decided)
            if item.persisted is not None:
                try:
                    await item.persisted
                except Exception as exc:
                    code, message = status_of(exc)
                    await context.abort(code, f"{item.label}: {message}")
            yield item.answer
            slots.release()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _next(queue: asyncio.Queue[object], reader: asyncio.Task[None], ending: Ending) -> object:
    """The next item of `queue`; _IDLE when none comes within the idle time; once stopping,
    no more requests are read and what was decided comes before the stopping failure."""
    stopping = ending.stopping
    if queue.empty() and not (stopping is not None and stopping.is_set()):
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(queue.get())]
        if stopping is not None:
            waits.append(asyncio.ensure_future(stopping.wait()))
        done, _ = await asyncio.wait(
            waits, timeout=ending.idle_s, return_when=asyncio.FIRST_COMPLETED
        )
        for wait in waits:
            wait.cancel()
        getter = waits[0]
        if getter in done:
            return getter.result()
        # An item put as the wait ended is in the queue already (a cancelled get leaves it).
        if not done and queue.empty():
            return _IDLE
    if stopping is not None and stopping.is_set():
        reader.cancel()
        item = queue.get_nowait() if not queue.empty() else _END
        if item is _END:
            return _Failure(grpc.StatusCode.UNAVAILABLE, ending.stopping_message)
        return item
    return queue.get_nowait()
