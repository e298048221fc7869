"""Notifications for the receiver tests: a group of stored events as the engine hands it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from protoevents.proxy.alerts.model import Notification
from protoevents.v1 import event_pb2, severity_pb2
from tests.support.events import stored_event


def alerting_event(n: int, **fields: str) -> event_pb2.Event:
    """A stored ERROR event, `n` apart from the others (node, time, attributes)."""
    event = stored_event(n, count=n + 1, **fields)
    event.severity = severity_pb2.SEVERITY_ERROR
    return event


def notification(*events: event_pb2.Event, **fields: Any) -> Notification:
    """A notification of rule `nic-down`, receiver `ops`, grouped by category."""
    chosen = events or (alerting_event(0), alerting_event(1))
    values: dict[str, Any] = {
        "key": "nic-down/category=cluster/1",
        "rule": "nic-down",
        "receiver": "ops",
        "group_key": "category=cluster",
        "group_labels": {"category": "cluster"},
        "events": tuple(chosen),
        "firing_since": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    }
    return Notification(**(values | fields))
