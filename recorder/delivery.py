"""The delivery thread: batches queued events, streams them to the proxy, spools what fails.

Order is kept per recorder: while the spool holds anything, new batches are appended to it and
sent from it, oldest first, so nothing overtakes a spooled batch. While the spool refuses
writes (a full disk, an I/O error), batches wait in memory in the same order and are sent from
there; `record()` bounds them with the queue.

No batch is discarded for a status of the proxy's (see `protoevents.recorder.statuses`): it is sent
again, or, when the proxy refuses it for good, set aside in the slot's dead-letter store. The stream
is opened when there is something to send; a stream the proxy ends while nothing is in flight (an
idle stream) is simply opened again with the next batch.

Once `finish()` is called (by `Recorder.close`) the thread stops backing off: it delivers the
spool while the proxy answers, reconnecting at once on a fresh connection after a stream that
made progress, and gives up (`gave_up`) when a stream on a fresh connection fails without any
acknowledgement, so that a closing process does not wait for a proxy that is down. A batch
refused as bad is still sent alone and set aside; one the proxy fails on (a SUSPECT status)
is left in the spool, as `protoevents spool replay` leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from protoevents.recorder.backoff import Backoff, Retries
from protoevents.recorder.deadletter import DeadLetter
from protoevents.recorder.setaside import SetAsideInUseError, make_batch
from protoevents.recorder.spool import Spool, SpoolEntry
from protoevents.recorder.stats import Counters
from protoevents.recorder.statuses import SUSPECT_ATTEMPTS, Verdict, verdict
from protoevents.recorder.tls import ClientTLS, ClientTLSError, TLSFiles
from protoevents.recorder.token import metadata as token_metadata
from protoevents.recorder.wire import (
    HEADER_BYTES,
    Item,
    batch_header,
    batch_payload,
    build_event,
    events_of,
    field_bytes,
)
from protoevents.v1 import event_pb2, proxy_service_pb2

log = logging.getLogger("protoevents.recorder")

RECORD_METHOD = "/protoevents.v1.EventProxyService/Record"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_SPOOL_RETRY_S = 0.5  # how often a spool that refused a write is tried again
_IDLE_TICK_S = 0.05  # the shortest wait of an idle thread (flush_interval 0)
_FINISH_TRIES = 3  # finishing, streams in a row that may fail without an acknowledgement


@dataclass(frozen=True)
class DeliveryOptions:
    """How the delivery thread batches and sends; see `Recorder` for the meaning of each."""

    proxy: str
    batch_size: int = 1000
    queue_size: int = 100_000
    max_batch_bytes: int = 7 << 19  # 3.5 MiB
    flush_interval: float = 0.2
    max_in_flight: int = 4
    ack_timeout: float = 10.0
    backoff_initial: float = 0.05
    backoff_max: float = 5.0
    credentials: grpc.ChannelCredentials | None = None
    token: str | None = None  # sent as `authorization: Bearer` metadata
    tls: ClientTLS | None = None


class StreamBrokenError(Exception):
    """The Record stream failed (or the proxy ended it: `code` OK); `code` says how.
    `status_lost`: it ended as a batch was being written and grpc hid the proxy's status."""

    def __init__(self, code: grpc.StatusCode, details: str, *, status_lost: bool = False) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.status_lost = status_lost


# What grpc's asyncio client reports, in place of the server's status, for a write that
# races with the end of the stream (grpc/grpc#36066): an artefact of the client, not a fault.
_WRITE_RACE_DETAILS = "Internal error from Core"


def _hides_status(error: StreamBrokenError | grpc.aio.AioRpcError) -> bool:
    if isinstance(error, StreamBrokenError):
        code, details = error.code, error.details
    else:
        code, details = error.code(), error.details() or ""
    return code is grpc.StatusCode.INTERNAL and details == _WRITE_RACE_DETAILS


@dataclass(slots=True)
class _Batch:
    payload: bytes
    count: int
    origin: SpoolEntry | None  # None: in memory (live, or held while the spool refuses writes)
    sent_at: float = 0.0


class _RateLimitedLog:
    """Logs a message per key at most once per interval, saying how many were suppressed."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self, level: int, key: str, message: str, *args: object, exc_info: bool = False
    ) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        suffix = f" ({suppressed} similar messages suppressed)" if suppressed else ""
        log.log(level, message + suffix, *args, exc_info=exc_info)

    def warning(self, key: str, message: str, *args: object) -> None:
        self.log(logging.WARNING, key, message, *args)

    def error(self, key: str, message: str, *args: object) -> None:
        self.log(logging.ERROR, key, message, *args)


def _identity(payload: bytes) -> bytes:
    return payload


def _closed_as_idle(broken: StreamBrokenError) -> bool:
    """The proxy ended the stream on purpose: status OK, or UNAVAILABLE saying "idle"."""
    if broken.code is grpc.StatusCode.OK:
        return True
    return broken.code is grpc.StatusCode.UNAVAILABLE and "idle" in broken.details.lower()


class Delivery:
    """Owns the delivery thread of one recorder (see the module docstring)."""

    def __init__(
        self,
        options: DeliveryOptions,
        queue: deque[Item],
        source: event_pb2.EventSource,
        spool: Spool,
        dead_letter: DeadLetter,
        counters: Counters,
        settle: Callable[[int], None],
        spool_changed: Callable[[], None],
    ) -> None:
        self.options = options
        self._queue = queue
        self._source = source
        self._spool = spool
        self._dead_letter = dead_letter
        self._counters = counters
        self._settle = settle
        self._spool_changed = spool_changed
        self._backoff = Retries(Backoff(options.backoff_initial, options.backoff_max))
        self._inflight: dict[int, _Batch] = {}
        self._held: deque[_Batch] = deque()  # refused by the spool, oldest first
        self._resend: deque[_Batch] = deque()  # in flight on a stream the proxy closed as idle
        self._quiet_resends = 0  # such closes since the last acknowledgement
        self._spool_retry_at = 0.0
        self._sequence = 0
        self._careful = False  # one batch at a time, until one is acknowledged
        self._suspect_attempts = 0
        self._more_due = False  # the last batch was cut by bytes: the next one is due now
        self._stopping = False
        self._finishing = False  # close() waits for the spool: deliver it without backing off
        self._failing = False  # the last stream failed, and nothing was acknowledged since
        self._fresh = False  # the channel was opened after finish(): its failures are real
        self._progress = False  # the current stream had an acknowledgement
        self._unanswered = 0  # finishing: streams in a row that failed without one
        self.gave_up = False  # finishing, the proxy did not answer on a fresh connection
        self._flush_requested = False
        self._last_batch = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal: asyncio.Event | None = None
        self._ready = threading.Event()
        self._log = _RateLimitedLog()
        self._thread = threading.Thread(target=self._run_thread, name="recorder", daemon=True)
        self._grpc_channel: grpc.aio.Channel | None = None
        self._record: Any = None
        self._tls_credentials = options.credentials
        self._tls_files: TLSFiles | None = None  # what the channel's credentials were made of

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

    def finish(self) -> None:
        """Deliver the spool without backing off, until the proxy stops answering (then
        `gave_up` is set and `spool_changed` called). For `Recorder.close`."""
        self._finishing = True
        self.wake()

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
        except Exception:  # a bug: never let the thread die silently with events in memory
            log.exception("recorder delivery thread failed; spooling what it holds")
            self._spool_everything()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._signal = asyncio.Event()
        self._ready.set()
        self._open_channel()
        try:
            while not self._stopping:
                await self._step()
        finally:
            self._spool_everything()
            self._dead_letter.close()
            channel, self._grpc_channel, self._record = self._grpc_channel, None, None
            if channel is not None:  # and not kept: a forked child must not free it
                await channel.close(grace=None)

    def _open_channel(self, *, fresh: bool = False) -> None:
        self._grpc_channel = self._channel(fresh=fresh)
        self._record = self._grpc_channel.stream_stream(
            RECORD_METHOD,
            request_serializer=_identity,
            response_deserializer=proxy_service_pb2.RecordResponse.FromString,
        )
        self._fresh = fresh

    async def _reconnect(self) -> None:
        """Replace the channel by one with a connection of its own, which connects at once
        (a failing channel waits out its reconnect backoff, failing calls meanwhile)."""
        old = self._grpc_channel
        self._open_channel(fresh=True)
        if old is not None:
            await old.close(grace=None)

    async def _step(self) -> None:
        """Wait for a batch, then stream until the stream ends; never raises but to stop."""
        try:
            if self._finishing and self._failing and not self._fresh and not self.gave_up:
                await self._reconnect()  # try now, not after the backoff
            first = self._next_batch()
            if first is None:
                await self._idle()
                return
            await self._session(first)
        except StreamBrokenError as broken:
            if self._after_failure(broken):
                self._failing = True
                if self._finishing and not self.gave_up:
                    await self._finishing_failure(broken)
                await self._renew_tls()
                if not self._stopping:
                    await self._offline(self._backoff.next_delay())
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception:  # an I/O error of the spool, or a bug: keep delivering
            self._log.log(logging.ERROR, "bug", "recorder delivery failed; retrying", exc_info=True)
            self._after_failure(StreamBrokenError(grpc.StatusCode.UNAVAILABLE, "recorder error"))
            if self._finishing:
                self._give_up()
            if not self._stopping:
                await self._offline(self._backoff.next_delay())

    async def _finishing_failure(self, broken: StreamBrokenError) -> None:
        """After a failed stream while finishing: go on at once while the proxy answers (it
        acknowledged some, refused the batch as bad, or ended the stream for a reason grpc
        hid), at most `_FINISH_TRIES` streams in a row without an acknowledgement; else give
        up. A connection from before `finish()` is replaced and tried once more."""
        if self._progress:
            self._unanswered = 0
        self._unanswered += 1
        answered = broken.status_lost or verdict(broken.code, broken.details) is Verdict.BAD_BATCH
        if self._unanswered > _FINISH_TRIES:
            self._give_up()
        elif self._progress or not self._fresh:
            await self._reconnect()  # the connection may be gone, or waiting to reconnect
        elif not answered:
            self._give_up()

    def _give_up(self) -> None:
        self.gave_up = True
        log.debug("proxy %s does not answer: leaving the rest spooled", self.options.proxy)
        self._spool_changed()

    def _channel(self, *, fresh: bool = False) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", int(self.options.backoff_max * 1000)),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.max_send_message_length", 64 << 20),
        ]
        if fresh:  # not the process's shared connection, which may be waiting to reconnect
            options.append(("grpc.use_local_subchannel_pool", 1))
        credentials = self._credentials()
        if credentials is not None:
            if self.options.tls is not None:
                options += self.options.tls.channel_options()
            return grpc.aio.secure_channel(self.options.proxy, credentials, options)
        return grpc.aio.insecure_channel(self.options.proxy, options)

    def _credentials(self) -> grpc.ChannelCredentials | None:
        """The TLS files as they are now (a renewed client certificate is taken), or the
        last ones that could be read."""
        if self.options.tls is not None:
            try:
                files = self.options.tls.read()
                self._tls_credentials = self.options.tls.credentials(files)
                self._tls_files = files
            except ClientTLSError as exc:
                self._log.log(logging.WARNING, "tls", "%s; using the last ones read", exc)
        return self._tls_credentials

    async def _renew_tls(self) -> None:
        """After a failed stream: a new channel when the TLS files changed since the channel
        was opened (a renewed certificate, a CA fixed), which its reconnects would not read."""
        if self.options.tls is None:
            return
        try:
            changed = self.options.tls.read() != self._tls_files
        except ClientTLSError:
            return  # `_credentials` says so when a channel is next opened
        if changed:
            old = self._grpc_channel
            self._open_channel(fresh=self._fresh)
            if old is not None:
                await old.close(grace=None)

    async def _session(self, first: _Batch) -> None:
        self._progress = False
        call = self._record(wait_for_ready=False, metadata=token_metadata(self.options.token))
        reader = asyncio.create_task(self._read_acks(call))
        try:
            await self._send(call, reader, first)
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
            batch = self._next_batch()
            if batch is None:
                await self._wait(self._batch_wait(), reader)
                continue
            await self._send(call, reader, batch)

    async def _send(self, call: Any, reader: asyncio.Task[None], batch: _Batch) -> None:
        self._sequence += 1
        batch.sent_at = time.monotonic()
        self._inflight[self._sequence] = batch
        if batch.origin is None:
            with self._counters.lock:
                self._counters.sent += batch.count
        header = batch_header(self._sequence)
        try:
            await call.write(header + batch.payload)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            (ended,) = await asyncio.gather(reader, return_exceptions=True)
            lost = isinstance(error, grpc.aio.AioRpcError) and _hides_status(error)
            if isinstance(ended, StreamBrokenError):
                if not (lost and _hides_status(ended)):
                    raise ended from None  # the stream's own status
            elif isinstance(ended, Exception):
                raise ended from error
            raise StreamBrokenError(
                grpc.StatusCode.UNAVAILABLE, "stream closed while sending", status_lost=lost
            ) from None

    async def _wait(self, timeout: float, reader: asyncio.Task[None]) -> None:
        assert self._signal is not None
        waiter = asyncio.ensure_future(self._signal.wait())
        await asyncio.wait({waiter, reader}, timeout=timeout, return_when="FIRST_COMPLETED")
        waiter.cancel()
        self._signal.clear()
        if reader.done():
            reader.result()
            raise StreamBrokenError(grpc.StatusCode.OK, "the proxy ended the stream")
        self._housekeeping()
        oldest = min((s.sent_at for s in self._inflight.values()), default=None)
        if oldest is not None and time.monotonic() - oldest > self.options.ack_timeout:
            raise StreamBrokenError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no acknowledgement within {self.options.ack_timeout} s",
            )

    async def _idle(self) -> None:
        """Nothing to send and no stream: wait for a batch to form."""
        assert self._signal is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._signal.wait(), self._batch_wait())
        self._signal.clear()
        self._housekeeping()

    def _housekeeping(self) -> None:
        self._spool_held()
        self._dead_letter.release_if_idle()

    def _ack_wait(self) -> float:
        return self.options.ack_timeout / 4

    def _batch_wait(self) -> float:
        if not self._queue:  # record() does not wake the thread for each event: look again
            return max(_IDLE_TICK_S, self.options.flush_interval)
        elapsed = time.monotonic() - self._last_batch
        return max(0.001, self.options.flush_interval - elapsed)

    async def _read_acks(self, call: Any) -> None:
        try:
            async for response in call:
                self._on_ack(response)
        except grpc.aio.AioRpcError as error:
            raise StreamBrokenError(error.code(), error.details() or "") from None
        raise StreamBrokenError(grpc.StatusCode.OK, "the proxy ended the stream")

    # -- acknowledgements ----------------------------------------------------------------

    def _on_ack(self, response: proxy_service_pb2.RecordResponse) -> None:
        sent = self._inflight.pop(response.sequence, None)
        if sent is None:
            self._log.warning("ack", "acknowledgement for unknown batch %d", response.sequence)
            return
        self._careful = False
        self._failing = False
        self._progress = True
        self._suspect_attempts = 0
        self._quiet_resends = 0
        self._backoff.reset()
        result = response.result
        if result.rejections or result.quarantined:
            self._sort_out(sent, result)
        delivered = sent.count - len(result.rejections)
        merged = sum(len(merge.indexes) for merge in result.merges)
        with self._counters.lock:
            self._counters.quarantined += len(result.quarantined)
            self._counters.merged += merged
            if sent.origin is None:
                self._counters.acknowledged += delivered
            else:
                self._counters.replayed += delivered
        self._done(sent)
        assert self._signal is not None
        self._signal.set()

    def _sort_out(self, sent: _Batch, result: proxy_service_pb2.BatchResult) -> None:
        """Set aside the events the proxy rejected; note those it keeps in quarantine."""
        events = events_of(sent.payload)
        for kept in result.quarantined:
            event_type = events[kept.index].type if kept.index < len(events) else "?"
            self._log.warning(
                f"quarantine-{event_type}",
                "the proxy does not know event type %s yet: it keeps such events in "
                "quarantine and stores them once it knows the type (%s)",
                event_type,
                kept.detail,
            )
        groups: dict[tuple[str, str], list[event_pb2.Event]] = {}
        for rejection in result.rejections:
            name = proxy_service_pb2.RejectionReason.Name(rejection.reason)
            reason = name.removeprefix("REJECTION_REASON_")
            event: event_pb2.Event | None = None
            if rejection.index < len(events) and events[rejection.index].id == rejection.event_id:
                event = events[rejection.index]
            else:
                event = next((e for e in events if e.id == rejection.event_id), None)
            if event is None:
                continue  # not an event of this batch: nothing to keep
            groups.setdefault((reason, rejection.detail), []).append(event)
        for (reason, detail), rejected in groups.items():
            with self._counters.lock:
                self._counters.rejected[reason] += len(rejected)
            try:
                self._dead_letter.put(make_batch("recorder", f"{reason}: {detail}", rejected))
            except (OSError, SetAsideInUseError) as error:
                self._counters.drop("set_aside_failed", len(rejected))
                self._log.error(
                    "set-aside-failed",
                    "proxy rejected %d events (%s: %s) and the dead-letter store %s "
                    "refused them (%s): dropped",
                    len(rejected),
                    reason,
                    detail,
                    self._dead_letter.directory,
                    error,
                )
                continue
            with self._counters.lock:
                self._counters.set_aside[f"event:{reason}"] += len(rejected)
            self._log.warning(
                f"reject-{reason}",
                "proxy rejected %d events (%s: %s): set aside in %s",
                len(rejected),
                reason,
                detail,
                self._dead_letter.directory,
            )

    def _done(self, batch: _Batch) -> None:
        """`batch` is delivered or set aside: settle it, or release it from the spool."""
        if batch.origin is None:
            self._settle(batch.count)
        else:
            self._spool.acknowledge(batch.origin)
            self._sync_spool()

    # -- choosing what to send -----------------------------------------------------------

    def _batch_due(self) -> bool:
        if not self._queue:
            return False
        return (
            len(self._queue) >= self.options.batch_size
            or self._more_due
            or self._flush_requested
            or self._stopping
            or time.monotonic() - self._last_batch >= self.options.flush_interval
        )

    def _take_batch(self) -> _Batch:
        """Up to `batch_size` queued events, and at most `max_batch_bytes` of them."""
        queue, events = self._queue, list[event_pb2.Event]()
        budget = self.options.max_batch_bytes - HEADER_BYTES
        self._more_due = False
        while queue and len(events) < self.options.batch_size:
            event = build_event(queue[0], self._source)
            size = field_bytes(event)
            if events and size > budget:
                self._more_due = True
                break
            queue.popleft()
            events.append(event)
            budget -= size
        if not queue:
            self._flush_requested = False
        self._last_batch = time.monotonic()
        payload = batch_payload(events)
        return _Batch(payload, len(events), None)

    def _next_batch(self) -> _Batch | None:
        """The next batch to send: from the spool (or memory, while the spool refuses
        writes) while either holds anything, else live."""
        if self._resend:
            return self._resend.popleft()
        if not self._spool.is_empty() or self._held or self._careful:
            while self._batch_due():
                self._hold(self._take_batch())
            entry = self._spool.next_unread()
            if entry is not None:
                return _Batch(entry.payload, entry.count, entry)
            if self._held:
                batch = self._held.popleft()
                self._sync_held()
                return batch
            return None
        if not self._batch_due():
            return None
        return self._take_batch()

    # -- the spool, and memory while it refuses writes -----------------------------------

    def _hold(self, batch: _Batch, *, oldest: bool = False) -> None:
        """Keep an in-memory batch: in the spool if it takes it, else in memory."""
        if oldest:
            self._held.appendleft(batch)
        else:
            self._held.append(batch)
        self._sync_held()
        self._spool_held(force=oldest)

    def _spool_held(self, *, force: bool = False) -> None:
        """Move the batches held in memory into the spool, oldest first, as far as it takes
        them. Not while an in-memory batch is in flight: it would come back behind them."""
        if not self._held or self._resend:
            return
        if any(b.origin is None for b in self._inflight.values()):
            return
        now = time.monotonic()
        if not force and now < self._spool_retry_at:
            return
        spooled = dropped = 0
        while self._held:
            batch = self._held[0]
            try:
                dropped += self._spool.append(batch.payload, batch.count)
            except OSError as error:
                self._spool_refused(error)
                self._spool_retry_at = now + _SPOOL_RETRY_S
                break
            self._held.popleft()
            spooled += batch.count
            self._settle(batch.count)
        if spooled:
            with self._counters.lock:
                self._counters.spooled += spooled
                if dropped:
                    self._counters.dropped["spool_full"] += dropped
            if self._counters.spool_error and not self._held:
                log.warning("the spool %s takes writes again", self._spool.directory)
                self._counters.spool_error = ""
        if dropped:
            self._log.warning(
                "spool_full", "spool is full: dropped the %d oldest spooled events", dropped
            )
        self._sync_held()
        self._sync_spool()

    def _spool_refused(self, error: OSError) -> None:
        reason = "disk_full" if error.errno in _DISK_FULL else "spool_write_failed"
        self._counters.spool_error = reason
        self._log.warning(
            f"spool-{reason}",
            "cannot write the spool %s (%s): keeping up to %d events in memory and trying "
            "again; past that, new events are dropped as %s",
            self._spool.directory,
            error,
            self.options.queue_size,
            reason,
        )

    def _sync_held(self) -> None:
        self._counters.held = sum(b.count for b in self._held)

    def _sync_spool(self) -> None:
        """Publish the spool's size to other threads (only this thread touches the spool)."""
        pending, size = self._spool.pending_events, self._spool.size_bytes
        with self._counters.lock:
            self._counters.spool_pending, self._counters.spool_bytes = pending, size
        self._spool_changed()

    # -- failure and shutdown ------------------------------------------------------------

    def _after_failure(self, broken: StreamBrokenError) -> bool:
        """Take back what was in flight after the stream ended; True when the proxy failed
        (back off before the next stream), False when it only ended an idle stream."""
        inflight = [self._inflight[seq] for seq in sorted(self._inflight)]
        self._inflight.clear()
        self._spool.rewind()
        if not inflight:
            log.debug("proxy %s ended an idle stream (%s)", self.options.proxy, broken)
            return False
        idle = (_closed_as_idle(broken) or broken.status_lost) and self._quiet_resends == 0
        if idle and all(b.origin is None for b in inflight):
            # Batches sent as the proxy closed the idle stream (or as it ended for a reason
            # grpc hid, which the next stream will tell): send them again at once.
            self._quiet_resends += 1
            self._resend.extendleft(reversed(inflight))
            log.debug("proxy %s closed the stream as idle: resending", self.options.proxy)
            return False
        judged = verdict(broken.code, broken.details)
        if judged is not Verdict.RETRY:
            if self._careful and len(inflight) == 1:
                self._suspect_attempts += 1
                if (
                    judged is Verdict.BAD_BATCH or self._suspect_attempts >= SUSPECT_ATTEMPTS
                ) and self._set_aside(inflight[0], broken):
                    inflight.pop()
                    self._suspect_attempts = 0
            self._careful = True
        self._log.warning(
            "stream",
            "stream to proxy %s failed (%s): keeping what it did not acknowledge, to send again",
            self.options.proxy,
            broken,
        )
        # Oldest first: what was in flight, what waited to be resent after it, what was held.
        self._held.extendleft(reversed(self._resend))
        self._resend.clear()
        for batch in reversed(inflight):
            if batch.origin is None:
                self._held.appendleft(batch)
        self._sync_held()
        self._spool_held(force=True)
        return True

    def _set_aside(self, batch: _Batch, broken: StreamBrokenError) -> bool:
        """Put a batch the proxy refused for good in the dead-letter store; False (the batch
        is kept and sent again) when the store cannot take it now."""
        reason = f"{broken.code.name}: {broken.details}"
        try:
            self._dead_letter.put(make_batch("recorder", reason, events_of(batch.payload)))
        except (OSError, SetAsideInUseError) as error:
            self._log.error(
                "set-aside-failed",
                "proxy refused a batch of %d events (%s); the dead-letter store %s refused "
                "it too (%s): keeping it",
                batch.count,
                reason,
                self._dead_letter.directory,
                error,
            )
            return False
        with self._counters.lock:
            self._counters.set_aside[f"batch:{broken.code.name}"] += batch.count
        log.error(
            "proxy refused a batch of %d events (%s): set aside in %s",
            batch.count,
            reason,
            self._dead_letter.directory,
        )
        self._done(batch)
        return True

    async def _offline(self, delay: float) -> None:
        """Wait `delay` before reconnecting, spooling batches as they form meanwhile."""
        assert self._signal is not None
        deadline = time.monotonic() + delay
        while not self._stopping:
            while self._batch_due():
                self._hold(self._take_batch())
            self._housekeeping()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._finishing and not self.gave_up):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), min(remaining, self._batch_wait()))
            self._signal.clear()

    def _spool_everything(self) -> None:
        """Put every event not acknowledged into the spool (at stop, or if the thread fails);
        what the spool refuses then is dropped and counted."""
        for seq in sorted(self._inflight, reverse=True):
            batch = self._inflight[seq]
            if batch.origin is None:
                self._held.appendleft(batch)
        self._inflight.clear()
        self._held.extendleft(reversed(self._resend))
        self._resend.clear()
        self._spool.rewind()
        while self._queue:
            self._held.append(self._take_batch())
        self._spool_held(force=True)
        lost = sum(b.count for b in self._held)
        if lost:
            reason = self._counters.spool_error or "spool_write_failed"
            self._counters.drop(reason, lost)
            log.error("stopped with %d events the spool refused (%s): dropped", lost, reason)
            self._held.clear()
            self._sync_held()
            self._settle(lost)
