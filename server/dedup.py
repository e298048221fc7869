"""Deduplication of repeated events into counts on the first event's id (pure, no I/O)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from protoevents.proxy.changes import CREATED, UPDATED, Change, fill_created
from protoevents.v1 import event_pb2

DEFAULT_WINDOW_SECONDS = 10.0
DEFAULT_MAX_ENTRIES = 100_000
# Room for the default 100,000 keys of events up to about 600 bytes serialized (1.7 KB
# accounted each; a typical event of 330 bytes accounts 1.4 KB, `python -m
# bench.bench_dedup_memory`), so the key bound still binds for them; a storm of large distinct
# events stops here instead of at 100,000 x their size (6 GiB of 60 KB ones).
DEFAULT_MAX_BYTES = 160 * 1024 * 1024

# What an entry holds beyond the bytes of its serialized event and the characters of its
# strings: the key tuple (its alert flag a shared bool) and the headers of its seven strings,
# the event id's header, the entry and its ints, the bytes header, and the OrderedDict's slot
# and node. Measured with tracemalloc (`python -m bench.bench_dedup_memory --scan`: 1,000 to
# 100,000 keys, either side of the dict's growth steps): 751 to 796 bytes a key as the LRU
# grows, 790 to 880 once it evicts (deleted slots, a table resized under churn). The largest,
# so the accounted total is not below what the entries hold. Characters count one byte each,
# as in the ASCII strings events carry (a string of wider characters holds 2 or 4 bytes a one).
ENTRY_OVERHEAD = 880

# type, severity, message, source node, source component, object kind, namespace, name, and
# whether the event asks for an alert (a forced alert never merges into a plain event's
# count, nor a plain event into a forced alert's).
DedupKey = tuple[str, int, str, str, str, str, str, str, bool]


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
        event.alert,
    )


@dataclass(slots=True)
class _Entry:
    first: bytes  # the stored event as CREATED, serialized (the log record is made of these
    # bytes too): compact, it does not keep the request's arena alive, and it is parsed back
    # only to make an update, once per merged-into id and batch
    event_id: str
    window_end_ns: int  # received time of the first occurrence + window
    count: int
    last_ns: int  # latest event time seen, in nanoseconds
    size: int  # bytes it holds, as accounted against max_bytes

    def update(self) -> event_pb2.Event:
        """The first event as it now stands: its count and latest last time."""
        update = event_pb2.Event.FromString(self.first)
        update.count = self.count
        last = update.last_time
        last.seconds, last.nanos = divmod(self.last_ns, 1_000_000_000)
        return update


def _ns(ts: timestamp_pb2.Timestamp) -> int:
    return ts.seconds * 1_000_000_000 + ts.nanos


class Deduplicator:
    """Merges repeats of an event arriving within `window` seconds of its first occurrence.

    The window is fixed from the first occurrence's received time (a steady stream of
    repeats still makes a new event every window). Time comes only from the `received_at`
    arguments, so replaying the same input gives the same changes. Keys live in an LRU of
    at most `max_entries` keys holding at most `max_bytes` (each key's serialized first event,
    its strings and `ENTRY_OVERHEAD`, accounted as it is made); `evictions` counts keys pushed
    out while their window was still open (each costs a merge: the next repeat becomes a new
    event). Keys whose window has closed are dropped as they reach the old end of the LRU, so
    memory follows the traffic of one window rather than the bounds. `window` 0 disables
    merging.
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if window < 0:
            raise ValueError(f"dedup window must be >= 0 seconds, not {window}")
        if max_entries < 1:
            raise ValueError(f"dedup max_entries must be >= 1, not {max_entries}")
        if max_bytes < 1:
            raise ValueError(f"dedup max_bytes must be >= 1, not {max_bytes}")
        self.window = window
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.held_bytes = 0  # what the entries hold, as accounted: at most max_bytes
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
        self._expire(received_at)
        key = dedup_key(event)
        entries = self._entries
        entry = entries.get(key)
        if entry is not None and received_at < entry.window_end_ns:
            entries.move_to_end(key)
            entry.count += 1
            time = event.time
            time_ns = time.seconds * 1_000_000_000 + time.nanos
            entry.last_ns = max(entry.last_ns, time_ns)
            self.merged += 1
            return Change(UPDATED, entry.update())
        return Change(CREATED, self._create(key, event, received_at, False, entry)[0])

    def observe_many(
        self,
        events: Iterable[event_pb2.Event],
        received_at: int,
        *,
        completed: bool = False,
        merges: dict[str, list[int]] | None = None,
        serialized: list[bytes] | None = None,
    ) -> list[Change]:
        """The changes of `events`, all received at `received_at`, collapsed.

        Equivalent to `observe` on each event in turn, keeping every CREATED in order and,
        after them, only the last UPDATED of each id (in the order ids were first updated):
        the same stored rows and the same state, with one update per id instead of one per
        repeat. With `completed`, the caller has already set count, first/last and received
        time, and a CREATED change carries the caller's event itself instead of a copy.
        With `merges`, the position in `events` of each repeat is added under the id of the
        event it was merged into. With `serialized`, the wire form of each CREATED event is
        appended to it, in order (the log record is made of them: no event is serialized
        twice).
        """
        if self._window_ns == 0:
            return _all_created(events, received_at, completed, serialized)
        entries = self._entries
        changes: list[Change] = []
        updated: dict[str, _Entry] = {}
        latest: _Entry | None = None  # the entry at the end of the LRU, already in `updated`
        merged = 0
        for position, event in enumerate(events):
            source = event.source
            obj = event.object
            key = (  # dedup_key(event), inlined: this loop is the hot path of a storm
                event.type,
                event.severity,
                event.message,
                source.node,
                source.component,
                obj.kind,
                obj.namespace,
                obj.name,
                event.alert,
            )
            entry = entries.get(key)
            if entry is not None and received_at < entry.window_end_ns:
                if entry is not latest:
                    entries.move_to_end(key)
                    updated[entry.event_id] = latest = entry
                entry.count += 1
                time = event.time
                entry.last_ns = max(entry.last_ns, time.seconds * 1_000_000_000 + time.nanos)
                merged += 1
                if merges is not None:
                    merges.setdefault(entry.event_id, []).append(position)
                continue
            latest = None
            created, first = self._create(key, event, received_at, completed, entry)
            changes.append(Change(CREATED, created))
            if serialized is not None:
                serialized.append(first)
        self.merged += merged
        if changes or merged:
            self._expire(received_at)  # as `observe` would have, had there been a call
        changes.extend(Change(UPDATED, entry.update()) for entry in updated.values())
        return changes

    def _create(
        self,
        key: DedupKey,
        event: event_pb2.Event,
        received_at: int,
        completed: bool,
        replaced: _Entry | None,
    ) -> tuple[event_pb2.Event, bytes]:
        """Remember `event` under `key`, in place of `replaced`, the key's entry whose window
        has closed (None when it has none). Returns the event as CREATED and its wire form."""
        created = event if completed else _created(event, received_at)
        first = created.SerializeToString()
        event_id = created.id
        # The key's strings are its own: protobuf makes a new str at each field access.
        size = (
            len(first)
            + len(event_id)
            + len(key[0])
            + len(key[2])
            + len(key[3])
            + len(key[4])
            + len(key[5])
            + len(key[6])
            + len(key[7])
            + ENTRY_OVERHEAD
        )
        if replaced is not None:
            self.held_bytes -= replaced.size
        entries = self._entries
        entries[key] = _Entry(
            first, event_id, received_at + self._window_ns, 1, _ns(created.time), size
        )
        entries.move_to_end(key)
        self.held_bytes += size
        if len(entries) > self.max_entries or self.held_bytes > self.max_bytes:
            self._evict(received_at)
        return created, first

    def _expire(self, now_ns: int) -> None:
        """Drop least recently used keys whose window has closed by `now_ns`."""
        entries = self._entries
        while entries:
            oldest = next(iter(entries.values()))
            if oldest.window_end_ns > now_ns:
                return
            entries.popitem(last=False)
            self.held_bytes -= oldest.size

    def _evict(self, now_ns: int) -> None:
        """Drop least recently used keys until both bounds hold (an event larger than
        `max_bytes` on its own is not remembered at all)."""
        entries = self._entries
        while entries and (len(entries) > self.max_entries or self.held_bytes > self.max_bytes):
            _, oldest = entries.popitem(last=False)
            self.held_bytes -= oldest.size
            if oldest.window_end_ns > now_ns:
                self.evictions += 1


def _created(event: event_pb2.Event, received_at: int) -> event_pb2.Event:
    created = event_pb2.Event()
    created.CopyFrom(event)
    seconds, nanos = divmod(received_at, 1_000_000_000)
    return fill_created(created, timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos))


def _all_created(
    events: Iterable[event_pb2.Event],
    received_at: int,
    completed: bool,
    serialized: list[bytes] | None,
) -> list[Change]:
    """`observe_many` with merging disabled: every event is CREATED."""
    if completed:
        made = [Change(CREATED, event) for event in events]
    else:
        made = [Change(CREATED, _created(event, received_at)) for event in events]
    if serialized is not None:
        serialized.extend(change.event.SerializeToString() for change in made)
    return made
