"""The protoevents recorder, embedded by components to emit typed events.

from protoevents.recorder import Recorder
from protoevents.cluster.v1.cluster_events_pb2 import ClusterEventType

with Recorder(component="controller", event_types=[ClusterEventType]) as events:
    events.record(ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED, "node-7 leads")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from protoevents.recorder.errors import (
    AmbiguousEventTypeError,
    EventTooLargeError,
    EventTypeError,
    SpoolInUseError,
    UnknownEventTypeError,
    UnspecifiedEventTypeError,
)
from protoevents.recorder.registry import EventType, Registry, RegistryError
from protoevents.recorder.stats import RecorderStats

if TYPE_CHECKING:
    from protoevents.recorder.logging_handler import EventHandler
    from protoevents.recorder.recorder import Recorder, default_spool_dir
    from protoevents.recorder.tls import ClientTLS, ClientTLSError

# Imported on first use (PEP 562), as concurrent.futures does with its process pool: they
# bring in grpc, which a program that only reads the registry (`protoevents types`) never needs.
_LAZY = {
    "ClientTLS": "protoevents.recorder.tls",
    "ClientTLSError": "protoevents.recorder.tls",
    "EventHandler": "protoevents.recorder.logging_handler",
    "Recorder": "protoevents.recorder.recorder",
    "default_spool_dir": "protoevents.recorder.recorder",
}

__all__ = [
    "AmbiguousEventTypeError",
    "ClientTLS",
    "ClientTLSError",
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


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
