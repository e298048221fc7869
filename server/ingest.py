"""The ingest pipeline of one batch: validate, drop replayed ids, dedup, persist, acknowledge."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.v1 import event_pb2, proxy_service_pb2
from server import changelog
from server.changes import CREATED, Change
from server.metrics import Metrics
from server.validation import Validator
from server.wal import LogFull, WriteAheadLog

log = logging.getLogger(__name__)

# Upper bound of the bytes the proxy adds to one event (category, severity, count and the
# three timestamps) plus its id in the record; used to refuse a batch before deciding on it.
_GROWTH_PER_EVENT = 200
_RECORD_OVERHEAD = 64


class Deduplicator(Protocol):
    """Decides whether an event is new or a repeat of a recent one (see server.dedup)."""

    def observe(self, event: event_pb2.Event, received_at: Timestamp) -> Change: ...


class NoDedup:
    """Every event is new."""

    def observe(self, event: event_pb2.Event, received_at: Timestamp) -> Change:
        return Change(CREATED, event)


class RecentIds:
    """The most recent `capacity` accepted event ids, oldest forgotten first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._order: deque[str] = deque()
        self._ids: set[str] = set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def add_many(self, ids: Iterable[str]) -> None:
        known = self._ids
        order = self._order
        for event_id in ids:
            if event_id not in known:
                known.add(event_id)
                order.append(event_id)
        while len(order) > self.capacity:
            known.discard(order.popleft())


class Ingest:
    """Turns batches of events into persisted change records and batch results.

    `submit` does all the deciding synchronously (so concurrent batches are decided and
    logged in one order) and returns the result with an awaitable that completes when the
    batch is persisted; `record` does both.
    """

    def __init__(
        self,
        wal: WriteAheadLog,
        validator: Validator,
        dedup: Deduplicator | None = None,
        *,
        id_cache_size: int = 1_000_000,
        metrics: Metrics | None = None,
    ) -> None:
        self.wal = wal
        self.validator = validator
        self.dedup: Deduplicator = dedup or NoDedup()
        self.recent = RecentIds(id_cache_size)
        self.metrics = metrics or Metrics()

    async def restore(self) -> int:
        """Refill the recent-id cache from the log's retained records; returns ids read."""

        def read_ids() -> list[str]:
            ids: deque[str] = deque(maxlen=self.recent.capacity)
            for payload in self.wal.scan():
                ids.extend(changelog.decode_ids(payload))
            return list(ids)

        ids = await asyncio.to_thread(read_ids)
        self.recent.add_many(ids)
        return len(ids)

    def submit(
        self, events: Sequence[event_pb2.Event], size_hint: int = 0
    ) -> tuple[proxy_service_pb2.BatchResult, asyncio.Future[int] | None]:
        """Decide on a batch and queue its record. Returns the result and a future that
        completes when everything the result acknowledges is persisted (None when the batch
        acknowledges nothing that needs waiting for).

        Raises MalformedBatchError for a malformed batch and LogFull when the log has no room; in
        both cases nothing of the batch is decided or stored.
        """
        count = len(events)
        self.validator.check_batch(count)
        metrics = self.metrics
        metrics.received.inc(count)
        wal = self.wal
        if size_hint + count * _GROWTH_PER_EVENT + _RECORD_OVERHEAD > wal.free_bytes():
            metrics.wal_full.inc()
            raise LogFull(
                f"write-ahead log is full ({wal.size} of {wal.max_bytes} bytes used): "
                "a writer is behind; retry later"
            )
        now = time.time()
        received = Timestamp(seconds=int(now), nanos=int((now % 1) * 1e9))
        check = self.validator.check
        recent = self.recent
        observe = self.dedup.observe
        rejections: list[proxy_service_pb2.EventRejection] = []
        accepted: dict[str, None] = {}
        created: list[bytes] = []
        updated: dict[str, bytes] = {}
        duplicates = 0
        for index, event in enumerate(events):
            problem = check(event, now)
            if problem is not None:
                rejections.append(
                    proxy_service_pb2.EventRejection(
                        index=index, event_id=event.id, reason=problem[0], detail=problem[1]
                    )
                )
                continue
            event_id = event.id
            if event_id in recent or event_id in accepted:
                duplicates += 1
                continue
            accepted[event_id] = None
            event.count = 1
            event.first_time.CopyFrom(event.time)
            event.last_time.CopyFrom(event.time)
            event.received_time.CopyFrom(received)
            change = observe(event, received)
            if change.kind == CREATED:
                created.append(change.event.SerializeToString())
            else:
                updated[change.event.id] = change.event.SerializeToString()
        result = proxy_service_pb2.BatchResult(
            accepted_count=len(accepted), duplicate_count=duplicates, rejections=rejections
        )
        if rejections:
            for rejection in rejections:
                metrics.rejected.labels(
                    proxy_service_pb2.RejectionReason.Name(rejection.reason)
                ).inc()
        if duplicates:
            metrics.duplicates.inc(duplicates)
        if not accepted:
            # Duplicates may be of ids still being persisted by an earlier batch: their ack
            # must not overtake that batch's.
            return result, wal.barrier() if duplicates else None
        if updated:
            metrics.dedup_merges.inc(len(accepted) - len(created))
        payload = changelog.encode(created, updated.values(), accepted)
        future = wal.submit(payload)
        recent.add_many(accepted)
        metrics.accepted.inc(len(accepted))
        metrics.wal_bytes.inc(len(payload))
        return result, future

    async def record(
        self, events: Sequence[event_pb2.Event], size_hint: int = 0
    ) -> proxy_service_pb2.BatchResult:
        """Decide on a batch and return its result once it is persisted."""
        result, persisted = self.submit(events, size_hint)
        if persisted is not None:
            await persisted
        return result
