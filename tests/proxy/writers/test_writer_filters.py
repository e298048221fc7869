"""Writer filters: minimum severity, categories and types decide what a writer receives."""

from __future__ import annotations

import asyncio

from protoevents.proxy.app import storing_writer
from protoevents.proxy.changes import CREATED, UPDATED, Change, has_trait
from protoevents.proxy.writers.filters import FilteredWriter, WriterFilter, filtered
from protoevents.v1 import severity_pb2
from tests.support.events import LEADER_ELECTED, repeated, stored_event
from tests.support.ingest_helpers import MemoryWriter

LEADER_LOST = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_LOST"


def change(severity: int, **fields: str) -> Change:
    event = stored_event(0, **fields)
    event.severity = severity  # type: ignore[assignment]
    return Change(CREATED, event)


def test_min_severity_categories_and_types_must_all_hold() -> None:
    warning = WriterFilter(min_severity=severity_pb2.SEVERITY_WARNING)
    assert not warning.matches(change(severity_pb2.SEVERITY_INFO).event)
    assert warning.matches(change(severity_pb2.SEVERITY_WARNING).event)
    assert warning.matches(change(severity_pb2.SEVERITY_CRITICAL).event)

    network = WriterFilter(categories=frozenset({"network", "cluster"}))
    assert network.matches(change(severity_pb2.SEVERITY_INFO, category="network").event)
    assert not network.matches(change(severity_pb2.SEVERITY_INFO, category="lab").event)

    # A type by its qualified name or by its value name alone.
    lost = WriterFilter(types=frozenset({"CLUSTER_EVENT_TYPE_LEADER_LOST"}))
    elected = WriterFilter(types=frozenset({LEADER_ELECTED}))
    assert lost.matches(change(severity_pb2.SEVERITY_INFO, type=LEADER_LOST).event)
    assert not lost.matches(change(severity_pb2.SEVERITY_INFO).event)
    assert elected.matches(change(severity_pb2.SEVERITY_INFO).event)

    both = WriterFilter(min_severity=severity_pb2.SEVERITY_ERROR, types=frozenset({LEADER_LOST}))
    assert not both.matches(change(severity_pb2.SEVERITY_WARNING, type=LEADER_LOST).event)
    assert both.matches(change(severity_pb2.SEVERITY_ERROR, type=LEADER_LOST).event)
    assert WriterFilter().matches(change(severity_pb2.SEVERITY_DEBUG).event)


def test_a_filtered_writer_receives_only_what_passes_and_keeps_its_name() -> None:
    async def main() -> None:
        inner = MemoryWriter("alerts")
        writer = filtered(inner, WriterFilter(min_severity=severity_pb2.SEVERITY_WARNING))
        assert isinstance(writer, FilteredWriter)
        assert writer.name == "alerts"  # the bookmark stays the writer's
        info, error = change(severity_pb2.SEVERITY_INFO), change(severity_pb2.SEVERITY_ERROR)
        update = Change(UPDATED, repeated(error.event, 3, later_ms=10))
        await writer.write([info, error, update])
        await writer.write([info])  # nothing passes: the writer is not called
        assert inner.batches == [[error, update]]
        await writer.close()
        assert inner.closed

    asyncio.run(main())


def test_an_empty_filter_adds_no_wrapper() -> None:
    inner = MemoryWriter("all")
    assert filtered(inner, WriterFilter()) is inner


def test_a_filtered_writer_keeps_the_traits_of_the_writer_it_wraps() -> None:
    inner = MemoryWriter("db")
    inner.stores = True  # type: ignore[attr-defined]
    writer = filtered(inner, WriterFilter(categories=frozenset({"network"})))
    assert has_trait(writer, "stores") and has_trait(writer, "filtered")
    assert not has_trait(writer, "live_only") and not has_trait(inner, "filtered")
    # Watchers follow the writer that stores, one that stores every change first.
    whole = MemoryWriter("whole")
    whole.stores = True  # type: ignore[attr-defined]
    assert storing_writer([MemoryWriter("x"), writer, whole]) == "whole"
    assert storing_writer([MemoryWriter("x"), writer]) == "db"
    assert storing_writer([MemoryWriter("x")]) is None
