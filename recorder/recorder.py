"""`Recorder`: what a component embeds to record typed events without ever being blocked."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.descriptor import EnumDescriptor
from uuid_utils import uuid7

from protoevents.recorder import grpc_threads
from protoevents.recorder.deadletter import DeadLetter, dead_letter_dir
from protoevents.recorder.delivery import Delivery, DeliveryOptions
from protoevents.recorder.errors import EventTooLargeError
from protoevents.recorder.registry import SEVERITY_VALUES, EnumType, Registry, parse_severity
from protoevents.recorder.resolve import EventTypeResolver
from protoevents.recorder.spool import Spool, SpoolSlot
from protoevents.recorder.stats import Counters, RecorderStats
from protoevents.recorder.tls import ClientTLS
from protoevents.recorder.token import resolve as resolve_token
from protoevents.recorder.wire import Item, build_event
from protoevents.v1 import event_pb2

# Bytes of an event besides its message, attributes, object and data: id, type and category
# names, time, severity, source (counted apart), the alert flag and field tags, with room to
# spare.
_EVENT_OVERHEAD = 512
_live: weakref.WeakSet[Recorder] = weakref.WeakSet()
_STOP_RESERVE_S = 0.5  # of close()'s timeout, kept for stopping the thread
_FORK_STOP_S = 5.0  # before a fork, how long a delivery thread may take to stop
_FORK_GRPC_QUIET_S = 2.0  # then, how long gRPC core may take to end its threads
log = logging.getLogger("protoevents.recorder")


def default_spool_dir() -> Path:
    """`$XDG_STATE_HOME/protoevents/spool`, or `~/.local/state/protoevents/spool`."""
    state = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(state) / "protoevents" / "spool"


def _object_ref(obj: object) -> event_pb2.ObjectRef | None:
    if obj is None or isinstance(obj, event_pb2.ObjectRef):
        return obj
    if isinstance(obj, str):
        parts = obj.split("/")
        if len(parts) == 2 and all(parts):
            return event_pb2.ObjectRef(kind=parts[0], name=parts[1])
        if len(parts) == 3 and parts[0] and parts[2]:
            return event_pb2.ObjectRef(kind=parts[0], namespace=parts[1], name=parts[2])
        raise ValueError(f"object {obj!r} must be KIND/NAME or KIND/NAMESPACE/NAME")
    raise TypeError(f"obj must be an ObjectRef or a 'KIND/NAME' string, not {type(obj).__name__}")


def _attributes(attributes: object) -> Mapping[str, str] | None:
    if attributes is None:
        return None
    if not isinstance(attributes, Mapping):
        raise TypeError(f"attributes must be a mapping of str to str, not {type(attributes)}")
    for key, value in attributes.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"attributes must map str to str; got {key!r}: {value!r}")
    return dict(attributes)


def _data(data: object) -> struct_pb2.Struct | None:
    if data is None or isinstance(data, struct_pb2.Struct):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a JSON-like mapping, not {type(data).__name__}")
    _check_integers(data, "data")
    struct = struct_pb2.Struct()
    try:
        struct.update(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"data must be JSON-like (str, number, bool, list, dict): {exc}") from None
    return struct


# Integers a Struct number (a double) holds exactly: beyond, it would store another number.
_EXACT_INTEGERS = 2**53


def _check_integers(value: object, where: str) -> None:
    """Refuse an integer a double cannot hold exactly, naming where it is in `data`."""
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > _EXACT_INTEGERS:
            raise ValueError(
                f"{where}: {value} cannot be stored exactly (data numbers are doubles, exact "
                f"up to 2**53); send it as a string"
            )
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_integers(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_integers(item, f"{where}[{index}]")


class Recorder:
    """Records events of the given event-type enums and streams them to a proxy.

    `record()` validates its arguments, stamps the event and queues it; a background thread
    batches (`batch_size` events or `flush_interval` seconds, whichever first), keeps up to
    `max_in_flight` batches on one `EventProxyService.Record` stream, and writes to the spool
    under `spool_dir` whatever the proxy has not acknowledged. The spool is replayed oldest
    first once the proxy answers again, also by a recorder started later on the same folder;
    `close()` goes on replaying it while the proxy answers.

    Batches hold at most `max_batch_bytes` (3.5 MiB: under the proxy's 16 MiB message limit
    and gRPC's default 4 MiB one), so one event may be at most `max_event_bytes` (1 MiB).

    Nothing but the caller's own mistakes (unknown event type: `EventTypeError`, an event over
    `max_event_bytes`: `EventTooLargeError`, both ValueErrors; wrong argument types: TypeError)
    ever raises from `record()`. What cannot be kept is counted in `stats().dropped`:
    `queue_full` (more than `queue_size` events waiting), `disk_full` or `spool_write_failed`
    (the same, while the spool refuses writes and events wait in memory), `spool_full` (the
    oldest spooled events, past `spool_max_bytes`), `closed` (recorded after `close()`).
    Nothing is dropped for a status of the proxy's: what it refuses for good (a batch, or
    events rejected in its acknowledgement) is set aside in the dead-letter store
    (`dead_letter_path`) and counted in `stats().set_aside`; `protoevents spool` shows and
    replays it.

    `proxy` is HOST:PORT or, for a proxy on the same machine, unix:PATH (its `listen_unix`).
    `tls` (a `ClientTLS`: CA file, client certificate and key for mTLS, server name) turns
    TLS on; its files are read again after a failed stream, and taken when they changed.
    Without `tls` or `credentials`, the PROTOEVENTS_CA_FILE, _CLIENT_CERT, _CLIENT_KEY,
    _SERVER_NAME and _TLS variables say (`ClientTLS.from_environ`; none set: plaintext).
    """

    def __init__(
        self,
        *,
        component: str,
        event_types: Iterable[EnumType | EnumDescriptor],
        proxy: str = "127.0.0.1:50051",
        node: str | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 1000,
        max_batch_bytes: int = 7 << 19,
        max_event_bytes: int = 1 << 20,
        flush_interval: float = 0.2,
        queue_size: int = 100_000,
        max_in_flight: int = 4,
        spool_max_bytes: int = 256 << 20,
        spool_fsync: bool = True,
        ack_timeout: float = 10.0,
        backoff_max: float = 5.0,
        credentials: grpc.ChannelCredentials | None = None,
        token: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        if not component:
            raise ValueError("component must be a non-empty name")
        if tls is not None and credentials is not None:
            raise ValueError("give tls or credentials, not both")
        if credentials is None:
            tls = tls or ClientTLS.from_environ()
            if tls is not None:
                credentials = tls.credentials()  # raises ClientTLSError now, not in the thread
        if batch_size < 1 or queue_size < batch_size:
            raise ValueError(f"need 1 <= batch_size ({batch_size}) <= queue_size ({queue_size})")
        if not 1024 <= max_event_bytes <= max_batch_bytes - 1024:
            raise ValueError(
                f"need 1024 <= max_event_bytes ({max_event_bytes}) <= max_batch_bytes "
                f"({max_batch_bytes}) - 1024"
            )
        self._resolver = EventTypeResolver(event_types)
        self.node = node or socket.gethostname()
        self.component = component
        self._source = event_pb2.EventSource(node=self.node, component=component)
        self._max_event_bytes = max_event_bytes
        self._fixed_bytes = _EVENT_OVERHEAD + self._source.ByteSize()
        self._spool_base = Path(spool_dir) if spool_dir is not None else default_spool_dir()
        self._spool_options = (spool_max_bytes, spool_fsync)
        self._options = DeliveryOptions(
            proxy=proxy,
            batch_size=batch_size,
            queue_size=queue_size,
            max_batch_bytes=max_batch_bytes,
            flush_interval=flush_interval,
            max_in_flight=max_in_flight,
            ack_timeout=ack_timeout,
            backoff_max=backoff_max,
            credentials=credentials,
            token=resolve_token(token),
            tls=tls,
        )
        self._queue_size = queue_size
        self._closed = False
        self._start()
        _live.add(self)

    def _start(self) -> None:
        """Create the per-process state: queue, counters, spool slot and delivery thread."""
        self._queue: deque[Item] = deque()
        self._counters = Counters()
        self._lock = threading.Lock()
        self._recorded = 0
        self._settled = 0
        self._settled_cv = threading.Condition()
        self._slot = SpoolSlot(self._spool_base / _safe(self.node) / _safe(self.component))
        max_bytes, fsync = self._spool_options
        self._spool = Spool(self._slot.directory, max_bytes=max_bytes, fsync=fsync)
        self._dead_letter = DeadLetter(dead_letter_dir(self._slot.directory), fsync=fsync)
        self._delivery = self._new_delivery()
        self._counters.spool_pending = self._spool.pending_events
        self._counters.spool_bytes = self._spool.size_bytes
        self._delivery.start()

    def _new_delivery(self) -> Delivery:
        return Delivery(
            self._options,
            self._queue,
            self._source,
            self._spool,
            self._dead_letter,
            self._counters,
            self._settle,
            self._spool_changed,
        )

    @property
    def registry(self) -> Registry:
        """The event types this recorder accepts."""
        return self._resolver.registry

    @property
    def spool_path(self) -> Path:
        """The folder this recorder spools into."""
        return self._slot.directory

    @property
    def dead_letter_path(self) -> Path:
        """The folder of the dead-letter store: batches and events the proxy refused for good
        (a set-aside store, see `protoevents.recorder.setaside`; created when first needed)."""
        return self._dead_letter.directory

    # -- recording -----------------------------------------------------------------------

    def record(
        self,
        event_type: int | str,
        message: str,
        *,
        severity: int | str | None = None,
        obj: event_pb2.ObjectRef | str | None = None,
        attributes: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | struct_pb2.Struct | None = None,
        alert: bool = False,
    ) -> str:
        """Queue one event and return its id; never blocks, never raises but for bad arguments.

        `event_type`: a value of one of the recorder's enums, or its name (qualified, or the
        value name when unambiguous). `severity`: a Severity value or name; defaults to the
        type's declared severity. `obj`: an ObjectRef or "KIND/NAME" / "KIND/NAMESPACE/NAME".
        `alert`: ask for an alert whatever the severity (`Event.alert`: the proxy's alert
        rules skip their minimum severity for it). An event over `max_event_bytes` serialized raises
        `EventTooLargeError`.
        """
        resolved = self._resolver.resolve(event_type)
        if type(message) is not str:
            raise TypeError(f"message must be str, not {type(message).__name__}")
        if type(alert) is not bool:
            raise TypeError(f"alert must be a bool, not {type(alert).__name__}")
        if severity is None:
            level = resolved.severity
        elif isinstance(severity, int) and severity in SEVERITY_VALUES:
            level = severity
        elif isinstance(severity, str):
            level = parse_severity(severity)
        else:
            raise ValueError(f"severity {severity!r} is not a Severity value")
        ref = _object_ref(obj) if obj is not None else None
        attrs = _attributes(attributes) if attributes is not None else None
        struct = _data(data) if data is not None else None
        event_id = str(uuid7())
        item = (event_id, resolved, message, level, ref, attrs, struct, time.time_ns(), alert)
        if self._size_bound(message, ref, attrs, struct) > self._max_event_bytes:
            size = build_event(item, self._source).ByteSize()
            if size > self._max_event_bytes:
                raise EventTooLargeError(
                    f"event of {size} bytes is over the recorder's max_event_bytes "
                    f"({self._max_event_bytes}): shorten its message, attributes or data"
                )
        if self._closed:
            self._counters.drop("closed", 1)
            return event_id
        queue, counters = self._queue, self._counters
        with self._lock:
            if len(queue) + counters.held >= self._queue_size:
                # While the spool refuses writes, memory holds what it would have taken.
                counters.drop(counters.spool_error or "queue_full", 1)
                return event_id
            queue.append(item)
            self._recorded += 1
            if len(queue) % self._options.batch_size == 0:
                self._delivery.wake()
        return event_id

    def _size_bound(
        self,
        message: str,
        ref: event_pb2.ObjectRef | None,
        attrs: Mapping[str, str] | None,
        struct: struct_pb2.Struct | None,
    ) -> int:
        """An upper bound of the event's serialized size, cheap to compute (4 bytes a
        character is UTF-8's most)."""
        bound = self._fixed_bytes + 4 * len(message)
        if attrs:
            bound += sum(4 * (len(k) + len(v)) + 8 for k, v in attrs.items())
        if ref is not None:
            bound += ref.ByteSize()
        if struct is not None:
            bound += struct.ByteSize()
        return bound

    # -- flushing and closing ------------------------------------------------------------

    def _settle(self, count: int) -> None:
        with self._settled_cv:
            self._settled += count
            self._settled_cv.notify_all()

    def _spool_changed(self) -> None:
        with self._settled_cv:
            self._settled_cv.notify_all()

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Send what is queued now; True once every event recorded before the call is
        acknowledged by the proxy, set aside, or safely in the spool; False on timeout or if
        any was dropped meanwhile."""
        target = self._recorded
        dropped_before = self._counters_dropped()
        self._delivery.wake(flush=True)
        with self._settled_cv:
            done = self._settled_cv.wait_for(lambda: self._settled >= target, timeout)
        return done and self._counters_dropped() == dropped_before

    def drain(self, timeout: float | None = 30.0) -> bool:
        """Like `flush`, but also wait until the spool is replayed: True once every event
        recorded before the call (and every spooled one) is acknowledged by the proxy (stored,
        or kept in its quarantine) or set aside in the dead-letter store; False on timeout or
        if any was dropped meanwhile. `stats()` tells which (`set_aside`, `quarantined`)."""
        dropped_before = self._counters_dropped()
        if not self.flush(timeout):
            return False
        with self._settled_cv:
            done = self._settled_cv.wait_for(lambda: self._spool_pending() == 0, timeout)
        return done and self._counters_dropped() == dropped_before

    def _spool_pending(self) -> int:
        with self._counters.lock:
            return self._counters.spool_pending

    async def aflush(self, timeout: float | None = 10.0) -> bool:
        """`flush` for asyncio code: waits in a thread, not on the event loop."""
        return await asyncio.to_thread(self.flush, timeout)

    def _counters_dropped(self) -> int:
        with self._counters.lock:
            return sum(self._counters.dropped.values())

    def _lost(self) -> int:
        """Events dropped, but for those recorded after `close()`."""
        with self._counters.lock:
            return self._counters.dropped.total() - self._counters.dropped["closed"]

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush, deliver the spool while the proxy answers, then stop, all within `timeout`.

        The spool is delivered oldest first (what this recorder spooled, and what an earlier
        process of the same node and component left) until it is empty, the proxy stops
        answering (a fresh connection to it fails: then close returns at once), or `timeout`
        nears; what is left stays spooled for a later recorder or `protoevents spool`.
        Events recorded afterwards are dropped (counted as `closed`). True when everything
        was acknowledged, set aside, or is safely in the spool; False when some was dropped
        meanwhile or the thread did not stop in time.
        """
        if self._closed:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        # Time kept for stopping: cancelling the stream and spooling what is in flight.
        reserve = 0.0 if timeout is None else min(_STOP_RESERVE_S, timeout / 4)
        lost_before = self._lost()
        self._delivery.finish()
        self.flush(_remaining(deadline, reserve))
        with self._settled_cv:
            self._settled_cv.wait_for(self._backlog_done, _remaining(deadline, reserve))
        self._closed = True
        left = _remaining(deadline)
        stopped = self._delivery.stop(30.0 if left is None else left)
        if stopped:
            self._spool.compact()  # what was delivered from a segment stays delivered
            self._spool.close()
            self._slot.release()
        _live.discard(self)
        # Stopped, the thread spooled what was not acknowledged, or counted it as dropped.
        return stopped and self._lost() == lost_before

    def _backlog_done(self) -> bool:
        """Nothing left to deliver, or the proxy does not answer."""
        if self._delivery.gave_up or not self._delivery.alive:
            return True
        with self._counters.lock:
            return self._counters.spool_pending == 0 and self._counters.held == 0

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- introspection -------------------------------------------------------------------

    def stats(self) -> RecorderStats:
        """A snapshot of the counters."""
        counters = self._counters
        with counters.lock:
            return RecorderStats(
                recorded=self._recorded,
                sent=counters.sent,
                acknowledged=counters.acknowledged,
                spooled=counters.spooled,
                replayed=counters.replayed,
                dropped=dict(counters.dropped),
                rejected=dict(counters.rejected),
                set_aside=dict(counters.set_aside),
                quarantined=counters.quarantined,
                merged=counters.merged,
                queued=len(self._queue),
                held=counters.held,
                spool_pending=counters.spool_pending,
                spool_bytes=counters.spool_bytes,
                spool_error=counters.spool_error,
            )

    # -- fork ----------------------------------------------------------------------------
    # A child inherits gRPC core's state but not its threads, so the delivery thread is stopped
    # before a fork (spooling what it holds), its channel closed, and the fork waits for gRPC
    # to end its own threads (see `grpc_threads`); the threads start again afterwards.

    def _before_fork(self) -> bool:
        """Stop the delivery thread; True if it was running."""
        if self._closed:
            return False
        if not self._delivery.stop(_FORK_STOP_S):
            log.warning("recorder delivery thread did not stop before fork(): the child may hang")
        return True

    def _after_fork_in_parent(self) -> None:
        if not self._closed:
            self._delivery = self._new_delivery()
            self._delivery.start()

    def _after_fork_in_child(self) -> None:
        """The child gets fresh state: it records its own events, not the parent's queue."""
        self._slot.release()
        if not self._closed:
            self._start()


def _remaining(deadline: float | None, reserve: float = 0.0) -> float | None:
    if deadline is None:
        return None
    return max(0.0, deadline - reserve - time.monotonic())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "_"


def _before_fork() -> None:
    stopped = [recorder._before_fork() for recorder in list(_live)]
    if any(stopped):
        # A failed call can leave its channel in a reference cycle (the error, its call, its
        # channel), which keeps gRPC core running until the cycle is collected.
        gc.collect()
        left = grpc_threads.wait_gone(_FORK_GRPC_QUIET_S)
        if left:
            log.warning(
                "gRPC core still runs %d threads (%s) at fork(): if it is in use besides the "
                "recorder, the child's recorder may hang (see gRPC's GRPC_ENABLE_FORK_SUPPORT)",
                len(left),
                ", ".join(sorted(set(left))),
            )


def _after_fork_in_parent() -> None:
    for recorder in list(_live):
        recorder._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for recorder in list(_live):
        recorder._after_fork_in_child()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
