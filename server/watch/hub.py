"""Fan-out of stored changes to watchers in this process, each with a bounded queue.

Each change is encoded once, as the WatchEvents message every watcher sends and as an element
of a batched one, however many watchers take it: a batched watcher with no filter costs a
join of those bytes per batch, not a copy and a serialization of each event. A change seen
before (a writer batch handed again after a restart, a change published to Redis twice) is
dropped here, once for all watchers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from protoevents.proxy.changes import CREATED, Change, watch_message
from protoevents.proxy.statuses import QueryError, WatcherTooSlowError
from protoevents.v1 import event_pb2

log = logging.getLogger(__name__)

Predicate = Callable[[event_pb2.Event], bool]


# Events whose last published count the hub remembers, to drop a change seen before.
_SEEN_MEMORY = 10_000


# WatchEventsResponse.changes: field 3, length-delimited. A WatchedChange has the fields of a
# one-change WatchEventsResponse (kind 1, event 2), so the shared encoding of a change is also
# its encoding as an element of `changes`: a batch is those bytes, each behind a tag and length.
_CHANGES_TAG = bytes([3 << 3 | 2])
BATCH_MAX_BYTES = 4 << 20  # well under any gRPC message limit the proxy accepts (>= 1 KiB: one
# change per message when a change is bigger)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def framed(message: bytes) -> bytes:
    """A one-change WatchEventsResponse as an element of a batched one's `changes`."""
    return _CHANGES_TAG + _varint(len(message)) + message


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A change, its WatchEvents message serialized, the same as an element of a batched
    message, and the count it brings the event to (all shared by every watcher)."""

    change: Change
    message: bytes
    element: bytes
    count: int

    @classmethod
    def of(cls, change: Change, message: bytes | None = None) -> Outgoing:
        message = watch_message(change) if message is None else message
        count = 1 if change.kind == CREATED else change.event.count
        return cls(change, message, framed(message), count)


def batches(elements: Iterable[bytes], max_bytes: int = BATCH_MAX_BYTES) -> Iterator[bytes]:
    """Serialized batched WatchEventsResponses holding `elements` (`framed` changes), in
    order, each under `max_bytes` unless a single change is bigger."""
    parts: list[bytes] = []
    size = 0
    for part in elements:
        if parts and size + len(part) > max_bytes:
            yield b"".join(parts)
            parts, size = [], 0
        parts.append(part)
        size += len(part)
    if parts:
        yield b"".join(parts)


class Subscription:
    """The changes one watcher has yet to take. A watcher that still has `capacity` changes
    waiting when the next batch comes is dropped: its next `get` raises WatcherTooSlowError.
    (A batch is taken whole, so a watcher that keeps up is never dropped for a big batch.)"""

    def __init__(self, hub: ChangeHub, matches: Predicate | None, capacity: int) -> None:
        self._hub = hub
        self._matches = matches  # None: every change
        self.capacity = capacity
        self._items: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self.failure: QueryError | None = None

    def offer(self, changes: Sequence[Outgoing]) -> None:
        """Queue the matching changes; never waits."""
        if self.failure is not None:
            return
        items = self._items
        if len(items) >= self.capacity:
            self.fail(
                WatcherTooSlowError(
                    f"the watcher fell {len(items)} changes behind (the limit is "
                    f"{self.capacity}) and was dropped; read faster or watch with a narrower "
                    "filter, then watch again (replay_count catches up)"
                )
            )
            return
        matches = self._matches
        if matches is None:
            items.extend(changes)
        else:
            items.extend(item for item in changes if matches(item.change.event))
        if items:
            self._ready.set()

    def fail(self, error: QueryError) -> None:
        """End the subscription: the next `get` raises `error`."""
        if self.failure is None:
            self.failure = error
            self._items.clear()
            self._hub.unsubscribe(self)
            self._ready.set()

    async def get(self) -> Outgoing:
        """The next change, waiting for one."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self._items:
                return self._items.popleft()
            self._ready.clear()
            await self._ready.wait()

    async def take(self) -> list[Outgoing]:
        """Every change waiting, at least one (waiting for it)."""
        while True:
            if self.failure is not None:
                raise self.failure
            if self._items:
                items = list(self._items)
                self._items.clear()
                return items
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        self._hub.unsubscribe(self)


class ChangeHub:
    """Hands each published batch of changes to every subscription, in order, without
    waiting on any of them (ingest and the writers never slow down for watchers)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._subscriptions: set[Subscription] = set()
        self._seen: OrderedDict[str, int] = OrderedDict()  # event id -> last count published
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, matches: Predicate | None = None) -> Subscription:
        """A subscription to the changes `matches` accepts (None: all of them)."""
        subscription = Subscription(self, matches, self.capacity)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(self, changes: Sequence[Change]) -> None:
        """Hand `changes` to every subscription, each encoded once."""
        if self._subscriptions:
            self.publish_encoded([Outgoing.of(change) for change in changes])

    def publish_encoded(self, outgoing: Sequence[Outgoing]) -> None:
        """Hand changes already encoded (as they came from Redis) to every subscription,
        leaving out those seen before."""
        seen = self._seen
        fresh: list[Outgoing] = []
        for item in outgoing:
            event_id = item.change.event.id
            if seen.get(event_id, 0) >= item.count:
                continue
            seen[event_id] = item.count
            seen.move_to_end(event_id)
            fresh.append(item)
        while len(seen) > _SEEN_MEMORY:
            seen.popitem(last=False)
        if not fresh:
            return
        for subscription in list(self._subscriptions):
            subscription.offer(fresh)
            if isinstance(subscription.failure, WatcherTooSlowError):
                self.dropped += 1
                log.warning("dropped a watcher: %s", subscription.failure)

    def fail_all(self, error: QueryError) -> None:
        """End every subscription with `error` (the source of changes went away)."""
        for subscription in list(self._subscriptions):
            subscription.fail(error)
