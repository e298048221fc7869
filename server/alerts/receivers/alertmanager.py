"""A notification as Alertmanager's webhook payload, version 4: one alert per event."""

from __future__ import annotations

from typing import Any

from protoevents.proxy.alerts.model import Notification
from protoevents.proxy.alerts.receivers import fields
from protoevents.recorder.registry import Registry

VERSION = "4"
# Go's zero time: what Alertmanager sends as endsAt of an alert that has not ended.
NO_END = "0001-01-01T00:00:00Z"


def payload(
    notification: Notification,
    *,
    external_url: str = "",
    generator_url: str = "",
    registry: Registry | None = None,
) -> dict[str, Any]:
    """The JSON object of `notification`: status "firing", groupKey the notification's group
    key, groupLabels its group labels, one alert per event (labels and annotations as
    fields.py makes them, startsAt the event's first time, endsAt Go's zero time),
    commonLabels and commonAnnotations what every alert shares. `generator_url` may hold
    `{event_id}`, replaced by each event's id."""
    alerts: list[dict[str, Any]] = []
    label_sets: list[dict[str, str]] = []
    annotation_sets: list[dict[str, str]] = []
    for event in notification.events:
        labels = fields.alert_labels(event, notification.rule)
        annotations = fields.alert_annotations(event, registry, notification.extra)
        label_sets.append(labels)
        annotation_sets.append(annotations)
        alerts.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": annotations,
                "startsAt": fields.rfc3339(fields.first_time(event)),
                "endsAt": NO_END,
                "generatorURL": generator_url.replace("{event_id}", event.id),
                "fingerprint": fields.fingerprint(labels),
            }
        )
    return {
        "version": VERSION,
        "groupKey": notification.group_key,
        "truncatedAlerts": notification.truncated,
        "status": "firing",
        "receiver": notification.receiver,
        "groupLabels": dict(notification.group_labels),
        "commonLabels": fields.common(label_sets),
        "commonAnnotations": fields.common(annotation_sets),
        "externalURL": external_url,
        "alerts": alerts,
    }
