"""Builders of stored-form events for the storage tests."""

from __future__ import annotations

import uuid
from typing import Any

from protoevents.v1 import event_pb2, severity_pb2

LEADER_ELECTED = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"
BASE_MICROS = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def stored_event(
    n: int = 0,
    *,
    event_id: str | None = None,
    count: int = 1,
    data: dict[str, Any] | None = None,
    **fields: str,
) -> event_pb2.Event:
    """An event as the dispatcher hands it to writers: count, first/last/received times set."""
    event = event_pb2.Event(
        id=event_id or str(uuid.uuid4()),
        type=fields.get("type", LEADER_ELECTED),
        severity=severity_pb2.SEVERITY_INFO,
        category=fields.get("category", "cluster"),
        message=fields.get("message", f"node-{n % 5} was elected leader"),
        count=count,
    )
    event.source.node = fields.get("node", f"node-{n % 5}")
    event.source.component = fields.get("component", "cluster-controller")
    event.object.kind = fields.get("kind", "Node")
    event.object.name = fields.get("name", f"node-{n % 5}")
    event.attributes["term"] = str(n)
    if data is not None:
        event.data.update(data)
    event.time.FromMicroseconds(BASE_MICROS + n * 1000)
    event.first_time.CopyFrom(event.time)
    event.last_time.CopyFrom(event.time)
    event.received_time.FromMicroseconds(BASE_MICROS + n * 1000 + 500)
    return event


def repeated(event: event_pb2.Event, count: int, later_ms: int) -> event_pb2.Event:
    """`event` as a dedup update: count raised, last_time moved `later_ms` on."""
    update = event_pb2.Event()
    update.CopyFrom(event)
    update.count = count
    update.last_time.FromMicroseconds(event.time.ToMicroseconds() + later_ms * 1000)
    return update
