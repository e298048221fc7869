"""Deduplication of repeated events into counts on the first event's id (pure, no I/O)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from protoevents.v1 import event_pb2
from server.changes import CREATED, UPDATED, Change

DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_MAX_ENTRIES = 100_000

# type, severity, message, source node, source component, object kind, namespace, name.
DedupKey = tuple[str, int, str, str, str, str, str, str]


def dedup_key(event: event_pb2.Event) -> DedupKey:
    """What makes two events the same occurrence: a tuple, so no two keys can collide."""
    source = event.source
    obj = event.object
    return (
        event.type,
        event.severity,
        event.message,
        source.node,
        source.component,
        obj.kind,
        obj.namespace,
        obj.name,
    )


@dataclass(slots=True)
class _Entry:
    first: event_pb2.Event  # the stored event as CREATED; never mutated
    window_end_ns: int  # received time of the first occurrence + window
    count: int
    last_ns: int  # latest event time seen, in nanoseconds


def _ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


class Deduplicator:
    """Merges repeats of an event arriving within `window` seconds of its first occurrence.

    The window is fixed from the first occurrence's received time (a steady stream of
    repeats still makes a new event every window). Time comes only from the `received_at`
    arguments, so replaying the same input gives the same changes. Keys live in an LRU of
    `max_entries`; `evictions` counts keys pushed out while their window was still open
    (each costs a merge: the next repeat becomes a new event). `window` 0 disables merging.
    """

    def __init__(
        self, window: float = DEFAULT_WINDOW_SECONDS, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if window < 0:
            raise ValueError(f"dedup window must be >= 0 seconds, not {window}")
        if max_entries < 1:
            raise ValueError(f"dedup max_entries must be >= 1, not {max_entries}")
        self.window = window
        self.max_entries = max_entries
        self._window_ns = round(window * 1_000_000_000)
        self._entries: OrderedDict[DedupKey, _Entry] = OrderedDict()
        self.evictions = 0
        self.merged = 0

    def __len__(self) -> int:
        return len(self._entries)

    def observe(self, event: event_pb2.Event, received_at: int) -> Change:
        """The change `event` makes, received at `received_at` (ns since the Unix epoch).

        `event` is not modified. A first occurrence gives CREATED with a copy of it (count 1,
        first and last time = its time, received_time = received_at); a repeat within the
        window gives UPDATED with the first event, count + 1 and the latest last_time.
        """
        if self._window_ns == 0:
            return Change(CREATED, _created(event, received_at))
        key = dedup_key(event)
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and received_at < entry.window_end_ns:
            entries.move_to_end(key)
            entry.count += 1
            time = event.time
            time_ns = time.seconds * 1_000_000_000 + time.nanos
            entry.last_ns = max(entry.last_ns, time_ns)
            update = event_pb2.Event()
            update.CopyFrom(entry.first)
            update.count = entry.count
            last = update.last_time
            last.seconds, last.nanos = divmod(entry.last_ns, 1_000_000_000)
            self.merged += 1
            return Change(UPDATED, update)
        created = _created(event, received_at)
        entries[key] = _Entry(created, received_at + self._window_ns, 1, _ns(created.time))
        entries.move_to_end(key)
        if len(entries) > self.max_entries:
            self._evict(received_at)
        return Change(CREATED, created)

    def _evict(self, now_ns: int) -> None:
        entries = self._entries
        while len(entries) > self.max_entries:
            _, oldest = entries.popitem(last=False)
            if oldest.window_end_ns > now_ns:
                self.evictions += 1


def _created(event: event_pb2.Event, received_at: int) -> event_pb2.Event:
    created = event_pb2.Event()
    created.CopyFrom(event)
    created.count = 1
    created.first_time.CopyFrom(event.time)
    created.last_time.CopyFrom(event.time)
    received = created.received_time
    received.seconds, received.nanos = divmod(received_at, 1_000_000_000)
    return created
