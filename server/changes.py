"""What the dispatcher hands to writers: stored events and their dedup updates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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


class Writer(Protocol):
    """A destination of batches of changes (SQL, syslog, Redis, ...).

    `write` must be idempotent: after a crash the dispatcher hands the same changes again
    from the writer's bookmark. Raising means "not written"; the dispatcher retries the same
    batch with backoff and never skips it.
    """

    name: str

    async def write(self, changes: Sequence[Change]) -> None: ...

    async def close(self) -> None: ...
