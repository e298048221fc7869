"""What the dispatcher hands to writers: stored events and their dedup updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

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
    """

    name: str

    async def write(self, changes: Sequence[Change]) -> None: ...

    async def close(self) -> None: ...


# What a writer may say of itself, as an attribute set to True:
#   stores         what it has written, queries find (watchers follow the writer that stores)
#   follows_store  takes a change only once the writer that stores has written it
#   live_only      hands changes on as they come: it starts at the end of the log, no history
#   filtered       takes only the changes its filter passes
Trait = Literal["stores", "follows_store", "live_only", "filtered"]


def has_trait(writer: Writer, trait: Trait) -> bool:
    """Whether `writer` says it has `trait` (a writer without the attribute has not)."""
    return getattr(writer, trait, False) is True
