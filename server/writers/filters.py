"""Writer filters: which changes a writer receives (minimum severity, categories, types)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from protoevents.proxy.changes import Change, Writer, has_trait
from protoevents.v1 import event_pb2


@dataclass(frozen=True, slots=True)
class WriterFilter:
    """Conditions an event must meet to reach a writer; all given ones must hold, an empty
    filter passes everything. `types` holds qualified type names or value names alone
    (`CLUSTER_EVENT_TYPE_LEADER_ELECTED`). A dedup update is judged by its event, like the
    event it updates."""

    min_severity: int = 0
    categories: frozenset[str] = field(default_factory=frozenset)
    types: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return not (self.min_severity or self.categories or self.types)

    def matches(self, event: event_pb2.Event) -> bool:
        if event.severity < self.min_severity:
            return False
        if self.categories and event.category not in self.categories:
            return False
        return not self.types or (
            event.type in self.types or event.type.rsplit(".", 1)[-1] in self.types
        )


class FilteredWriter:
    """A writer that hands on only the changes its filter passes (nothing when none does).
    It keeps the wrapped writer's name, so the bookmark stays the same, and its traits."""

    filtered = True

    def __init__(self, writer: Writer, condition: WriterFilter) -> None:
        self.writer = writer
        self.filter = condition
        self.name = writer.name
        self.stores = has_trait(writer, "stores")
        self.follows_store = has_trait(writer, "follows_store")
        self.live_only = has_trait(writer, "live_only")
        self.rides_out = has_trait(writer, "rides_out")

    async def write(self, changes: Sequence[Change]) -> None:
        passed = [change for change in changes if self.filter.matches(change.event)]
        if passed:
            await self.writer.write(passed)

    async def close(self) -> None:
        await self.writer.close()


def filtered(writer: Writer, condition: WriterFilter) -> Writer:
    """`writer` behind `condition`, or `writer` itself when the filter passes everything."""
    return writer if condition.empty else FilteredWriter(writer, condition)
