"""An alerting event as the fields receivers show: labels (what identifies the alert) and
annotations (what describes it), times in RFC 3339, the labels' fingerprint."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence

from google.protobuf import timestamp_pb2

from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2, severity_pb2

_LABEL_NAME = re.compile(r"[^A-Za-z0-9_]")
# FNV-1a, 64 bits: the hash of Prometheus' label fingerprints.
_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_SEPARATOR = 0xFF


def rfc3339(stamp: timestamp_pb2.Timestamp) -> str:
    """UTC time with microseconds, such as 2026-01-01T00:00:00.000500Z."""
    moment = dt.datetime.fromtimestamp(stamp.seconds, dt.UTC) + dt.timedelta(
        microseconds=stamp.nanos // 1000
    )
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def first_time(event: event_pb2.Event) -> timestamp_pb2.Timestamp:
    """When the event first happened (its time when first_time is unset)."""
    return event.first_time if event.HasField("first_time") else event.time


def last_time(event: event_pb2.Event) -> timestamp_pb2.Timestamp:
    """When the event last happened (its time when last_time is unset)."""
    return event.last_time if event.HasField("last_time") else event.time


def severity_label(event: event_pb2.Event) -> str:
    """The severity in lower case, as Alertmanager routes conventionally match it: "error"."""
    name = severity_pb2.Severity.Name(event.severity)
    return name.removeprefix("SEVERITY_").lower()


def label_name(key: str) -> str:
    """`key` as a Prometheus label name: characters other than letters, digits and '_' as
    '_', a leading '_' before a digit."""
    name = _LABEL_NAME.sub("_", key) or "_"
    return f"_{name}" if name[0].isdigit() else name


def alert_labels(event: event_pb2.Event, rule: str) -> dict[str, str]:
    """The labels of the alert an event makes: alertname (the type's value name), rule,
    severity, category, node, component, object_kind / object_namespace / object_name and
    site when set, then the attributes (names made label names; one that an event field
    already takes goes as `attribute_<name>`)."""
    found = {
        "alertname": event.type.rsplit(".", 1)[-1],
        "rule": rule,
        "severity": severity_label(event),
        "category": event.category,
        "node": event.source.node,
        "component": event.source.component,
        "object_kind": event.object.kind,
        "object_namespace": event.object.namespace,
        "object_name": event.object.name,
        "site": event.site,
    }
    result = {name: value for name, value in found.items() if value}
    for key, value in sorted(event.attributes.items()):
        name = label_name(key)
        if name in found:
            name = f"attribute_{name}"
        result.setdefault(name, value)
    return result


def description(event: event_pb2.Event, registry: Registry | None) -> str:
    """The declared description of the event's type; empty when unknown."""
    if registry is None:
        return ""
    found = registry.get(event.type)
    return found.description if found is not None else ""


def alert_annotations(
    event: event_pb2.Event, registry: Registry | None, extra: Mapping[str, str]
) -> dict[str, str]:
    """The annotations of the alert an event makes: the rule's annotations (`extra`), and
    message, event_id, count, first_time, last_time (which a rule's annotation of the same
    name does not replace), description the type's declared one unless the rule sets it."""
    result = dict(extra)
    result.update(
        {
            "message": event.message,
            "event_id": event.id,
            "count": str(max(event.count, 1)),
            "first_time": rfc3339(first_time(event)),
            "last_time": rfc3339(last_time(event)),
        }
    )
    if text := description(event, registry):
        result.setdefault("description", text)
    return result


def fingerprint(label_set: Mapping[str, str]) -> str:
    """The labels' fingerprint as Prometheus computes it (FNV-1a 64 over the sorted names and
    values, each followed by 0xff), 16 hexadecimal digits."""
    value = _FNV_OFFSET
    for name in sorted(label_set):
        for part in (name, label_set[name]):
            for byte in (*part.encode(), _SEPARATOR):
                value = ((value ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """The pairs every map holds (empty when there are none)."""
    if not maps:
        return {}
    first, *rest = maps
    return {k: v for k, v in first.items() if all(other.get(k) == v for other in rest)}
