"""The protoevents recorder, embedded by components to emit typed events.

from recorder import Recorder
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType

with Recorder(component="controller", event_types=[ClusterEventType]) as events:
    events.record(ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED, "node-7 leads")
"""

from recorder.errors import (
    AmbiguousEventTypeError,
    EventTooLargeError,
    EventTypeError,
    SpoolInUseError,
    UnknownEventTypeError,
    UnspecifiedEventTypeError,
)
from recorder.logging_handler import EventHandler
from recorder.recorder import Recorder, default_spool_dir
from recorder.registry import EventType, Registry, RegistryError
from recorder.stats import RecorderStats

__all__ = [
    "AmbiguousEventTypeError",
    "EventHandler",
    "EventTooLargeError",
    "EventType",
    "EventTypeError",
    "Recorder",
    "RecorderStats",
    "Registry",
    "RegistryError",
    "SpoolInUseError",
    "UnknownEventTypeError",
    "UnspecifiedEventTypeError",
    "default_spool_dir",
]
