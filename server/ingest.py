"""The ingest pipeline of one batch: validate, drop replayed ids, dedup, persist, acknowledge.

Events of types the proxy does not know yet go to the quarantine (`protoevents.proxy.quarantine`)
instead, persisted before the ack like the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp

from protoevents.proxy import changelog
from protoevents.proxy.backlog import Backlog, appended_at, record_changes
from protoevents.proxy.changes import CREATED, fill_created
from protoevents.proxy.dedup import Deduplicator
from protoevents.proxy.metrics import Metrics
from protoevents.proxy.quarantine import Forward, Quarantine, Unknown
from protoevents.proxy.sources import SourceClaims
from protoevents.proxy.validation import UNKNOWN_TYPE, Problem, UnknownType, Validator
from protoevents.proxy.wal import HEADER, WriteAheadLog
from protoevents.v1 import event_pb2, proxy_service_pb2

log = logging.getLogger(__name__)

# Upper bound of the bytes the proxy adds to one event (category, severity, count, three
# timestamps, its framing in the record and its id in the id list); used to refuse a batch
# the log has no room for before deciding anything about it.
_GROWTH_PER_EVENT = 200
_RECORD_OVERHEAD = 64


Batch: TypeAlias = proxy_service_pb2.RecordRequest | proxy_service_pb2.RecordBatchRequest
Persisted: TypeAlias = asyncio.Future[int]
SOURCE_FORBIDDEN = proxy_service_pb2.REJECTION_REASON_SOURCE_FORBIDDEN


def joined(first: Persisted | None, second: Persisted | None) -> Persisted | None:
    """A future of both (either may be None), failing when either fails."""
    if second is None:
        return first
    if first is None:
        return second
    return asyncio.ensure_future(_both(first, second))


async def _both(first: Persisted, second: Persisted) -> int:
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    position = outcomes[0]
    assert isinstance(position, int)
    return position


class _Decision:
    """What a batch's accepted events became."""

    def __init__(self) -> None:
        self.accepted: dict[str, None] = {}  # ids, in batch order
        self.created: list[event_pb2.Event] = []
        self.serialized: list[bytes] = []  # the wire form of each CREATED event, when dedup made it
        self.updated: dict[str, event_pb2.Event] = {}  # first-event id -> its latest state
        self.merges: dict[str, list[int]] = {}  # first-event id -> batch indexes merged in

    def encode(self) -> bytes:
        """The change record (each new event is serialized once, by dedup when it runs)."""
        serialized = self.serialized or [e.SerializeToString() for e in self.created]
        return changelog.encode(serialized, self.updated.values(), self.accepted)


class _Forbidden:
    """The source check of one batch, remembering each source's answer."""

    def __init__(self, claims: SourceClaims) -> None:
        self.claims = claims
        self.seen: dict[tuple[str, str], bool] = {}

    def check(self, event: event_pb2.Event) -> Problem | None:
        """SOURCE_FORBIDDEN and why, when the claims do not allow the event's source."""
        node, component = event.source.node, event.source.component
        allowed = self.seen.get((node, component))
        if allowed is None:
            allowed = self.seen[node, component] = self.claims.allows(node, component)
        if allowed:
            return None
        return SOURCE_FORBIDDEN, (
            f"identity {self.claims.identity!r} may not record events of source "
            f"{node}/{component} (its sources: {', '.join(self.claims.patterns) or 'none'})"
        )


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
        quarantine: Quarantine | None = None,
        backlog: Backlog | None = None,
    ) -> None:
        self.wal = wal
        self.validator = validator
        self.dedup = dedup  # None: every event is new
        self.recent = RecentIds(id_cache_size)
        self.metrics = metrics or Metrics()
        self.quarantine = quarantine  # None: an unknown type is rejected
        self.backlog = backlog if backlog is not None else Backlog()  # the records not written

    async def release_quarantined(self, forward: Forward | None = None) -> int:
        """Store the quarantined events whose type is now known (at start, after `restore`:
        ids already in the log are duplicates, so a repeated release stores nothing twice);
        forwarded changes through `forward` (kept when None)."""
        if self.quarantine is None:
            return 0
        return await self.quarantine.release(self.validator, self.record, forward)

    async def restore(self) -> int:
        """Refill the recent-id cache from the log's retained records, and the backlog with
        those past the lowest bookmark (register the readers first); returns ids read."""
        wal, backlog = self.wal, self.backlog
        lowest = wal.low_water_mark()

        def read_ids() -> list[str]:
            ids: deque[str] = deque(maxlen=self.recent.capacity)
            position, at = wal.start, time.time()
            while True:
                records, position = wal.read_records(position, 16 << 20)
                if not records:
                    return list(ids)
                for start, payload in records:
                    record = changelog.parse(payload)
                    ids.extend(record.accepted_ids)
                    end = start + HEADER.size + len(payload)
                    if end > lowest:
                        at = appended_at(record) or at
                        backlog.add(end, record_changes(record), at)

        ids = await asyncio.to_thread(read_ids)
        self.recent.add_many(ids)
        return len(ids)

    async def close(self) -> None:
        """Release the quarantine (the log is closed by its owner)."""
        if self.quarantine is not None:
            await self.quarantine.close()

    def submit(
        self, request: Batch, claims: SourceClaims | None = None
    ) -> tuple[proxy_service_pb2.BatchResult, Persisted | None]:
        """Decide on a batch and queue its record (with `claims`, an event of a source they
        do not allow is rejected as SOURCE_FORBIDDEN). Returns the result and a future that
        completes when everything the result acknowledges is persisted (None when the batch
        acknowledges nothing that needs waiting for). Accepted events are completed in place.

        Raises MalformedBatchError for a malformed batch, LogFull when the log (or
        QuarantineFull when the quarantine) has no room and LogUnavailable while the log
        cannot write; in each case nothing of the batch is decided or stored. The future
        fails with QuarantineUnavailable when the batch's events of unknown types could
        not be persisted.
        """
        count = len(request.events)
        self.validator.check_batch(count)
        metrics = self.metrics
        metrics.received.inc(count)
        now = time.time()
        rejections, good, good_at, size, unknown = self._validate(request, now, claims)
        wal = self.wal
        if good and size > wal.free_bytes():
            metrics.wal_full.inc()
            raise wal.refusal()
        quarantine = self.quarantine
        if unknown and quarantine is not None:
            quarantine.check_room(sum(e.ByteSize() for _, e, _ in unknown))
        decision = self._decide(good, good_at, now)
        accepted = decision.accepted
        duplicates = len(good) - len(accepted)
        quarantined: Persisted | None = None
        result = proxy_service_pb2.BatchResult(
            accepted_count=len(accepted), duplicate_count=duplicates, rejections=rejections
        )
        for into, indexes in decision.merges.items():
            result.merges.add(into_event_id=into, indexes=indexes)
        if unknown and quarantine is not None:
            entries, repeated, quarantined = quarantine.admit(unknown, accepted, self.recent)
            result.quarantined.extend(entries)
            result.duplicate_count += repeated
            duplicates += repeated
        if duplicates:
            metrics.duplicates.inc(duplicates)
        if not accepted:
            # Duplicates may be of ids still being persisted by an earlier batch: their ack
            # must not overtake that batch's.
            return result, joined(wal.barrier() if duplicates else None, quarantined)
        payload = decision.encode()
        future = wal.submit(payload)
        self.note_appended(len(decision.created) + len(decision.updated), now)
        self.recent.add_many(accepted)
        metrics.accepted.inc(len(accepted))
        if decision.updated:
            metrics.dedup_merges.inc(len(accepted) - len(decision.created))
        metrics.wal_bytes.inc(len(payload))
        return result, joined(future, quarantined)

    def note_appended(self, changes: int, at: float) -> None:
        """Index the record just submitted to the log (`changes` created + updated, appended
        at wall-clock time `at`) in the backlog, and forget the ones every reader passed.
        Call it right after each `wal.submit`, before the next."""
        wal = self.wal
        self.backlog.add(wal.reserved_end, changes, at)
        self.backlog.trim(wal.low_water_mark())

    def _validate(
        self, request: Batch, now: float, claims: SourceClaims | None
    ) -> tuple[
        list[proxy_service_pb2.EventRejection],
        list[event_pb2.Event],
        list[int],
        int,
        list[Unknown],
    ]:
        """Rejections, good events and their indexes in the batch, an upper bound of the good
        events' record size, and the events to quarantine."""
        inspect = self.validator.inspect
        rejections: list[proxy_service_pb2.EventRejection] = []
        good: list[event_pb2.Event] = []
        good_at: list[int] = []
        unknown: list[Unknown] = []
        size = _RECORD_OVERHEAD
        forbidden = None if claims is None or claims.unrestricted else _Forbidden(claims)
        for index, event in enumerate(request.events):
            outcome = inspect(event, now)
            if forbidden is not None and not isinstance(outcome, tuple):
                outcome = forbidden.check(event) or outcome
            if isinstance(outcome, int):
                good.append(event)
                good_at.append(index)
                size += outcome + _GROWTH_PER_EVENT
                continue
            if isinstance(outcome, UnknownType):
                if self.quarantine is not None:
                    unknown.append((index, event, outcome.detail))
                    continue
                outcome = UNKNOWN_TYPE, outcome.detail
            rejections.append(
                proxy_service_pb2.EventRejection(
                    index=index, event_id=event.id, reason=outcome[0], detail=outcome[1]
                )
            )
            self.metrics.rejected.labels(proxy_service_pb2.RejectionReason.Name(outcome[0])).inc()
        return rejections, good, good_at, size, unknown

    def _decide(self, good: list[event_pb2.Event], good_at: list[int], now: float) -> _Decision:
        """Leave out replayed ids, complete the events, let dedup decide (`good_at`: the
        events' indexes in their batch)."""
        received = Timestamp(seconds=int(now), nanos=int((now % 1) * 1e9))
        received_ns = received.seconds * 1_000_000_000 + received.nanos
        recent = self.recent
        decision = _Decision()
        accepted = decision.accepted
        fresh: list[event_pb2.Event] = []
        fresh_at: list[int] = []
        for event, index in zip(good, good_at, strict=True):
            event_id = event.id
            if event_id in recent or event_id in accepted:
                continue
            accepted[event_id] = None
            fresh_at.append(index)
            fresh.append(fill_created(event, received))
        if self.dedup is None:
            decision.created.extend(fresh)
            return decision
        merges: dict[str, list[int]] = {}
        changes = self.dedup.observe_many(
            fresh, received_ns, completed=True, merges=merges, serialized=decision.serialized
        )
        for change in changes:
            if change.kind == CREATED:
                decision.created.append(change.event)
            else:
                decision.updated[change.event.id] = change.event
        decision.merges = {into: [fresh_at[p] for p in at] for into, at in merges.items()}
        return decision

    async def record(
        self, request: Batch, claims: SourceClaims | None = None
    ) -> proxy_service_pb2.BatchResult:
        """Decide on a batch and return its result once it is persisted."""
        result, persisted = self.submit(request, claims)
        if persisted is not None:
            await persisted
        return result
