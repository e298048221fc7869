"""What the dispatcher hands to writers: stored events and their dedup updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from google.protobuf import timestamp_pb2

from protoevents.v1 import event_pb2, query_service_pb2

CREATED = query_service_pb2.CHANGE_KIND_CREATED
UPDATED = query_service_pb2.CHANGE_KIND_UPDATED


@dataclass(frozen=True, slots=True)
class Change:
    """One change to the stored events.

    CREATED: a new event (count 1, first_time == last_time == time, received_time set).
    UPDATED: a repeat merged into the event `event.id`: `event` is the first event as it now
    stands, with its new `count` and `last_time`. Counts only grow, so a writer applies an
    update as `count = max(stored count, event.count)`, which makes replays harmless.
    """

    kind: query_service_pb2.ChangeKind.ValueType
    event: event_pb2.Event


def fill_created(event: event_pb2.Event, received: timestamp_pb2.Timestamp) -> event_pb2.Event:
    """Complete `event`, in place, as a new one received at `received`: count 1, first and
    last time its time, that received time. Returns it."""
    event.count = 1
    event.received_time.CopyFrom(received)
    time = event.time
    event.first_time.CopyFrom(time)
    event.last_time.CopyFrom(time)
    return event


def merge_repeats(changes: Sequence[Change]) -> list[Change]:
    """The changes with the repeats of an id merged: its first CREATED and its last UPDATED
    kept where they are, the other changes of that id left out; the order of what remains is
    kept (a list equal to `changes` when no id repeats).

    Dedup's contract makes this lossless: each change record holds every CREATED of its
    batch, then at most one UPDATED per id, the first event as it stands after the batch;
    counts and last times of an id only grow from record to record, so the last UPDATED of an
    id carries all the earlier ones. Should it not (updates handed out of order), the kept
    update is a copy raised to the highest count and latest last time of that id's updates,
    as a writer applying them all in turn would store. A repeated CREATED is a replay of the
    same event (writers are idempotent), so the first stands for all.
    """
    created: set[str] = set()
    last: dict[str, int] = {}
    repeats = False
    for index, change in enumerate(changes):
        event_id = change.event.id
        if change.kind == UPDATED:
            repeats = repeats or event_id in last
            last[event_id] = index
        elif event_id in created:
            repeats = True
        else:
            created.add(event_id)
    if not repeats:
        return list(changes)
    merged: list[Change] = []
    first_created: set[str] = set()
    highest = _highest_updates(changes)
    for index, change in enumerate(changes):
        event_id = change.event.id
        if change.kind != UPDATED:
            if event_id not in first_created:
                first_created.add(event_id)
                merged.append(change)
        elif last[event_id] == index:
            merged.append(highest.get(event_id, change))
    return merged


def _highest_updates(changes: Sequence[Change]) -> dict[str, Change]:
    """For each id whose last UPDATED lacks the highest count or latest last time of its
    updates, that last update raised to them."""
    best: dict[str, tuple[int, tuple[int, int], Change]] = {}
    for change in changes:
        if change.kind != UPDATED:
            continue
        event = change.event
        last = event.last_time
        mark = (last.seconds, last.nanos)
        known = best.get(event.id)
        if known is None:
            best[event.id] = (event.count, mark, change)
        else:
            best[event.id] = (max(known[0], event.count), max(known[1], mark), change)
    raised: dict[str, Change] = {}
    for event_id, (count, (seconds, nanos), change) in best.items():
        event = change.event
        if event.count == count and (event.last_time.seconds, event.last_time.nanos) == (
            seconds,
            nanos,
        ):
            continue
        copy = event_pb2.Event()
        copy.CopyFrom(event)
        copy.count = count
        copy.last_time.seconds, copy.last_time.nanos = seconds, nanos
        raised[event_id] = Change(UPDATED, copy)
    return raised


def watch_message(change: Change) -> bytes:
    """The change as WatchEvents sends it: a serialized `protoevents.v1.WatchEventsResponse`
    (also the payload of the Redis channel that relays changes between proxies)."""
    return query_service_pb2.WatchEventsResponse(
        kind=change.kind, event=change.event
    ).SerializeToString()


class PermanentWriteError(Exception):
    """A writer refuses a batch for a reason retrying will not change (a Redis key of the
    wrong type, a value the database refuses). The dispatcher retries it a bounded number of
    times, then isolates the refused changes and sets them aside for that writer."""


class Writer(Protocol):
    """A destination of batches of changes (SQL, syslog, Redis, ...).

    `write` must be idempotent: after a crash the dispatcher hands the same changes again
    from the writer's bookmark. Raising means "not written": PermanentWriteError for a refusal
    that retrying will not change, anything else for a failure that may pass (a connection
    lost), which the dispatcher retries with backoff for as long as it lasts.

    A writer says what else it is by attributes set to True (see `Trait`; absent is False).
    The changes it is handed are shared with the other writers: it never modifies them.
    """

    name: str

    async def write(self, changes: Sequence[Change]) -> None: ...

    async def close(self) -> None: ...


# What a writer may say of itself, as an attribute set to True:
#   stores         what it has written, queries find (watchers follow the writer that stores)
#   follows_store  takes a change only once the writer that stores has written it
#   live_only      hands changes on as they come: it starts at the end of the log, no history
#   filtered       takes only the changes its filter passes
#   idle           has no one to hand changes to right now (a property: it may change at any
#                  time): its feed passes the changes by, undecoded, instead of writing them
#   rides_out      fails while what it feeds is away (another proxy it forwards to), which the
#                  log is there to ride out: its failing makes its own health NOT_SERVING, not
#                  the proxy's ingest, which goes on while the log has room
Trait = Literal["stores", "follows_store", "live_only", "filtered", "idle", "rides_out"]


def has_trait(writer: Writer, trait: Trait) -> bool:
    """Whether `writer` says it has `trait` (a writer without the attribute has not)."""
    return getattr(writer, trait, False) is True
