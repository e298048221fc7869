"""The delivery thread: batches queued events, streams them to the proxy, spools what fails.

Order is kept per recorder: while the spool holds anything, new batches are appended to it and
sent from it, oldest first, so nothing overtakes a spooled batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from protoevents.v1 import event_pb2, proxy_service_pb2
from recorder.backoff import Backoff
from recorder.registry import EventType
from recorder.spool import Spool, SpoolEntry
from recorder.stats import Counters

log = logging.getLogger("recorder")

RECORD_METHOD = "/protoevents.v1.EventProxyService/Record"

# A batch refused with one of these will be refused again: it is not retried forever.
POISON_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.DATA_LOSS,
    }
)

# What record() enqueues: id, type, message, severity, object, attributes, data, time (ns).
Item = tuple[
    str,
    EventType,
    str,
    int,
    event_pb2.ObjectRef | None,
    Mapping[str, str] | None,
    struct_pb2.Struct | None,
    int,
]


@dataclass(frozen=True)
class DeliveryOptions:
    """How the delivery thread batches and sends; see `Recorder` for the meaning of each."""

    proxy: str
    batch_size: int = 1000
    flush_interval: float = 0.2
    max_in_flight: int = 4
    ack_timeout: float = 10.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    credentials: grpc.ChannelCredentials | None = None


class StreamBrokenError(Exception):
    """The Record stream failed; `code` says how."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(slots=True)
class _Sent:
    payload: bytes
    count: int
    origin: SpoolEntry | None  # None: a live batch, not yet in the spool
    sent_at: float


class _RateLimitedLog:
    """Logs a message per key at most once per interval, saying how many were suppressed."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        suffix = f" ({suppressed} similar messages suppressed)" if suppressed else ""
        log.warning(message + suffix, *args)


def _identity(payload: bytes) -> bytes:
    return payload


class Delivery:
    """Owns the delivery thread of one recorder (see the module docstring)."""

    def __init__(
        self,
        options: DeliveryOptions,
        queue: deque[Item],
        source: event_pb2.EventSource,
        spool: Spool,
        counters: Counters,
        settle: Callable[[int], None],
        spool_changed: Callable[[], None],
    ) -> None:
        self.options = options
        self._queue = queue
        self._source = source
        self._spool = spool
        self._counters = counters
        self._settle = settle
        self._spool_changed = spool_changed
        self._backoff = Backoff(options.backoff_initial, options.backoff_max)
        self._inflight: dict[int, _Sent] = {}
        self._sequence = 0
        self._careful = False
        self._stopping = False
        self._flush_requested = False
        self._last_batch = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal: asyncio.Event | None = None
        self._ready = threading.Event()
        self._log = _RateLimitedLog()
        self._thread = threading.Thread(target=self._run_thread, name="recorder", daemon=True)

    # -- control from other threads ------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5.0)

    def wake(self, flush: bool = False) -> None:
        """Tell the thread that a batch is ready (or that a flush was asked for)."""
        if flush:
            self._flush_requested = True
        loop, signal = self._loop, self._signal
        if loop is not None and signal is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(signal.set)

    def stop(self, timeout: float) -> bool:
        """Spool whatever is not acknowledged, close the stream and end the thread."""
        self._stopping = True
        self.wake()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the thread ----------------------------------------------------------------------

    def _run_thread(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never let the thread die silently with events in memory
            log.exception("recorder delivery thread failed; spooling what it holds")
            self._spool_everything()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._signal = asyncio.Event()
        self._ready.set()
        channel = self._channel()
        record = channel.stream_stream(
            RECORD_METHOD,
            request_serializer=_identity,
            response_deserializer=proxy_service_pb2.RecordResponse.FromString,
        )
        try:
            while not self._stopping:
                try:
                    await self._session(record)
                except StreamBrokenError as broken:
                    self._after_failure(broken)
                    if not self._stopping:
                        await self._offline(self._backoff.next_delay())
        finally:
            self._spool_everything()
            await channel.close(grace=None)

    def _channel(self) -> grpc.aio.Channel:
        options = [
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", int(self.options.backoff_max * 1000)),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_send_message_length", 64 << 20),
        ]
        if self.options.credentials is not None:
            return grpc.aio.secure_channel(self.options.proxy, self.options.credentials, options)
        return grpc.aio.insecure_channel(self.options.proxy, options)

    async def _session(self, record: Any) -> None:
        call = record(wait_for_ready=False)
        reader = asyncio.create_task(self._read_acks(call))
        try:
            await self._pump(call, reader)
        finally:
            reader.cancel()
            call.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _pump(self, call: Any, reader: asyncio.Task[None]) -> None:
        while not self._stopping:
            window = 1 if self._careful else self.options.max_in_flight
            if len(self._inflight) >= window:
                await self._wait(self._ack_wait(), reader)
                continue
            picked = self._next_payload()
            if picked is None:
                await self._wait(self._batch_wait(), reader)
                continue
            payload, count, origin = picked
            self._sequence += 1
            self._inflight[self._sequence] = _Sent(payload, count, origin, time.monotonic())
            if origin is None:
                with self._counters.lock:
                    self._counters.sent += count
            header = proxy_service_pb2.RecordRequest(sequence=self._sequence).SerializeToString()
            try:
                await call.write(header + payload)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await asyncio.gather(reader, return_exceptions=True)
                if reader.done() and not reader.cancelled():
                    reader.result()  # raises the stream's own StreamBrokenError
                raise StreamBrokenError(
                    grpc.StatusCode.UNAVAILABLE, "stream closed while sending"
                ) from None

    async def _wait(self, timeout: float, reader: asyncio.Task[None]) -> None:
        assert self._signal is not None
        waiter = asyncio.ensure_future(self._signal.wait())
        await asyncio.wait({waiter, reader}, timeout=timeout, return_when="FIRST_COMPLETED")
        waiter.cancel()
        self._signal.clear()
        if reader.done():
            reader.result()
            raise StreamBrokenError(grpc.StatusCode.UNAVAILABLE, "the proxy ended the stream")
        oldest = min((s.sent_at for s in self._inflight.values()), default=None)
        if oldest is not None and time.monotonic() - oldest > self.options.ack_timeout:
            raise StreamBrokenError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no acknowledgement within {self.options.ack_timeout} s",
            )

    def _ack_wait(self) -> float:
        return self.options.ack_timeout / 4

    def _batch_wait(self) -> float:
        elapsed = time.monotonic() - self._last_batch
        return max(0.001, self.options.flush_interval - elapsed)

    async def _read_acks(self, call: Any) -> None:
        try:
            async for response in call:
                self._on_ack(response)
        except grpc.aio.AioRpcError as error:
            raise StreamBrokenError(error.code(), error.details() or "") from None
        raise StreamBrokenError(grpc.StatusCode.UNAVAILABLE, "the proxy ended the stream")

    def _on_ack(self, response: proxy_service_pb2.RecordResponse) -> None:
        sent = self._inflight.pop(response.sequence, None)
        if sent is None:
            self._log.warning("ack", "acknowledgement for unknown batch %d", response.sequence)
            return
        self._careful = False
        self._backoff.reset()
        rejected = len(response.result.rejections)
        with self._counters.lock:
            for rejection in response.result.rejections:
                reason = proxy_service_pb2.RejectionReason.Name(rejection.reason)
                self._counters.rejected[reason.removeprefix("REJECTION_REASON_")] += 1
            if sent.origin is None:
                self._counters.acknowledged += sent.count - rejected
            else:
                self._counters.replayed += sent.count - rejected
        for rejection in response.result.rejections:
            self._log.warning(
                f"reject-{rejection.reason}",
                "proxy rejected event %s: %s",
                rejection.event_id,
                rejection.detail,
            )
        if sent.origin is None:
            self._settle(sent.count)
        else:
            self._spool.acknowledge(sent.origin)
            self._sync_spool()
        assert self._signal is not None
        self._signal.set()

    # -- choosing what to send -----------------------------------------------------------

    def _batch_due(self) -> bool:
        if not self._queue:
            return False
        return (
            len(self._queue) >= self.options.batch_size
            or self._flush_requested
            or self._stopping
            or time.monotonic() - self._last_batch >= self.options.flush_interval
        )

    def _take_batch(self) -> tuple[bytes, int]:
        queue, events = self._queue, []
        for _ in range(min(self.options.batch_size, len(queue))):
            events.append(self._event(queue.popleft()))
        if not queue:
            self._flush_requested = False
        self._last_batch = time.monotonic()
        payload = proxy_service_pb2.RecordRequest(events=events).SerializeToString()
        return payload, len(events)

    def _event(self, item: Item) -> event_pb2.Event:
        event_id, event_type, message, severity, obj, attributes, data, time_ns = item
        event = event_pb2.Event(
            id=event_id,
            type=event_type.name,
            severity=severity,  # type: ignore[arg-type]
            category=event_type.category,
            message=message,
            source=self._source,
            object=obj,
            attributes=attributes,
            data=data,
        )
        event.time.FromNanoseconds(time_ns)
        return event

    def _next_payload(self) -> tuple[bytes, int, SpoolEntry | None] | None:
        """The next batch to send: from the spool while it holds anything, else live."""
        if not self._spool.is_empty() or self._careful:
            while self._batch_due():
                self._spool_batch(*self._take_batch())
            entry = self._spool.next_unread()
            return None if entry is None else (entry.payload, entry.count, entry)
        if not self._batch_due():
            return None
        payload, count = self._take_batch()
        return payload, count, None

    # -- failure and shutdown ------------------------------------------------------------

    def _spool_batch(self, payload: bytes, count: int) -> None:
        dropped = self._spool.append(payload, count)
        with self._counters.lock:
            self._counters.spooled += count
            if dropped:
                self._counters.dropped["spool_full"] += dropped
        self._sync_spool()
        if dropped:
            self._log.warning(
                "spool_full", "spool is full: dropped the %d oldest spooled events", dropped
            )
        self._settle(count)

    def _after_failure(self, broken: StreamBrokenError) -> None:
        inflight = [self._inflight[seq] for seq in sorted(self._inflight)]
        self._inflight.clear()
        self._spool.rewind()
        if broken.code in POISON_CODES:
            if self._careful and len(inflight) == 1:
                self._drop_poison(inflight.pop(), broken)
            self._careful = True
        self._log.warning(
            "stream", "proxy %s unavailable (%s); spooling", self.options.proxy, broken
        )
        for sent in inflight:
            if sent.origin is None:
                self._spool_batch(sent.payload, sent.count)

    def _drop_poison(self, sent: _Sent, broken: StreamBrokenError) -> None:
        self._counters.drop(f"rejected_batch_{broken.code.name.lower()}", sent.count)
        log.error("proxy refused a batch of %d events (%s): dropped", sent.count, broken)
        if sent.origin is None:
            self._settle(sent.count)
        else:
            self._spool.acknowledge(sent.origin)
            self._sync_spool()

    def _sync_spool(self) -> None:
        """Publish the spool's size to other threads (only this thread touches the spool)."""
        pending, size = self._spool.pending_events, self._spool.size_bytes
        with self._counters.lock:
            self._counters.spool_pending, self._counters.spool_bytes = pending, size
        self._spool_changed()

    async def _offline(self, delay: float) -> None:
        """Wait `delay` before reconnecting, spooling batches as they form meanwhile."""
        assert self._signal is not None
        deadline = time.monotonic() + delay
        while not self._stopping:
            while self._batch_due():
                self._spool_batch(*self._take_batch())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), min(remaining, self._batch_wait()))
            self._signal.clear()

    def _spool_everything(self) -> None:
        """Put every event not acknowledged into the spool (at stop, or if the thread fails)."""
        for seq in sorted(self._inflight):
            sent = self._inflight[seq]
            if sent.origin is None:
                self._spool_batch(sent.payload, sent.count)
        self._inflight.clear()
        self._spool.rewind()
        while self._queue:
            self._spool_batch(*self._take_batch())
