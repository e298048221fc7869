"""What the alert engine hands to receivers: one notification of a group of alerting events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from protoevents.v1 import event_pb2


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one receiver about one group of alerting events.

    `key` identifies it for good, `{rule}/{group_key}/{sequence}`: a receiver sees it once
    (webhooks get it as the Idempotency-Key header, emails as their Message-ID), and a resend
    after a crash carries the same key. `group_labels` are the `group_by` fields and their
    values; `events` the group's events as stored (count, first and last time), oldest first;
    `firing_since` when the group's first event was stored.
    """

    key: str
    rule: str
    receiver: str
    group_key: str
    group_labels: dict[str, str]
    events: tuple[event_pb2.Event, ...]
    firing_since: datetime
    truncated: int = 0  # events of the group left out (a notification holds at most so many)
    extra: dict[str, str] = field(default_factory=dict)  # the rule's annotations


class DeliveryError(Exception):
    """A notification was not delivered; `retryable` says whether sending it again may work
    (5xx, 429, a timeout, SMTP 4xx) or not (4xx but 429, SMTP 5xx, a bad address);
    `retry_after_s` the wait the receiver asked for (an HTTP Retry-After), None when it asked
    for none."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s
