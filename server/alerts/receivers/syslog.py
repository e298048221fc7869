"""The syslog receiver (kind `syslog`): each event of a notification as one syslog message,
in the syslog writer's formats and over its transports, marked as an alert."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from protoevents.proxy.alerts.model import DeliveryError, Notification
from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.writers.syslog import SyslogOptions, SyslogWriter
from protoevents.proxy.writers.syslog_format import NIL, Rfc5424, cut, escape_param, sd_name
from protoevents.recorder.registry import Registry
from protoevents.v1 import event_pb2

# The syslog writer's options, the same keys and checks.
Options = SyslogOptions


def alert_element(notification: Notification, enterprise_number: int) -> str:
    """The SD-ELEMENT `alert@<enterprise_number>`: key, rule, receiver, truncated when
    events were left out, and the group labels as `group.<name>`."""
    pairs = [
        ("key", notification.key),
        ("rule", notification.rule),
        ("receiver", notification.receiver),
    ]
    if notification.truncated:
        pairs.append(("truncated", str(notification.truncated)))
    pairs += [(sd_name(f"group.{k}"), v) for k, v in sorted(notification.group_labels.items())]
    params = "".join(f' {name}="{escape_param(value)}"' for name, value in pairs if value)
    return f"[alert@{enterprise_number}{params}]"


def rfc5424(
    formatter: Rfc5424, notification: Notification, event: event_pb2.Event, max_bytes: int | None
) -> bytes:
    """The syslog writer's RFC 5424 message of `event` with the alert's SD-ELEMENT first.
    Over `max_bytes`, MSG is shortened first; then `data` goes, then the attributes, then
    the event's SD-ELEMENT (the alert's stays)."""
    change = Change(CREATED, event)
    header = formatter.header(event).encode()
    alert = alert_element(notification, formatter.enterprise_number).encode()
    msg = formatter.message(event)
    variants = [
        formatter.structured_data(change).encode(),
        formatter.structured_data(change, data=False).encode(),
        formatter.structured_data(change, data=False, attributes=False).encode(),
        b"",
    ]
    for sd in variants:
        head = header + b" " + alert + sd
        if max_bytes is None or len(head) + 1 + len(msg) <= max_bytes:
            return head + b" " + msg if msg else head
        room = max_bytes - len(head) - 1
        if room >= 0:
            return head + (b" " + cut(msg, room) if room else b"")
    return cut(header + b" " + NIL.encode(), max_bytes or len(header))


def rfc3164(writer: SyslogWriter, notification: Notification, event: event_pb2.Event) -> bytes:
    """The syslog writer's RFC 3164 message of `event`, its text preceded by
    `[alert RULE]` (the format has no structured data for the key)."""
    marked = event_pb2.Event()
    marked.CopyFrom(event)
    marked.message = f"[alert {notification.rule}] {event.message}"
    return writer.formatter.format(Change(CREATED, marked), writer.max_bytes)


class SyslogReceiver:
    """Sends each event of a notification as one syslog message to one collector, not one
    summary: collectors index and search messages one event each, and a summary of many
    events would be cut to a datagram's size over UDP.

    The messages are the syslog writer's (RFC 5424 or RFC 3164, server/writers/syslog.py
    and its options) with the notification in front: in RFC 5424 the SD-ELEMENT
    `alert@<enterprise_number>` (key, rule, receiver, truncated, group labels) before the
    event's, so a collector can tell a resend by its key; in RFC 3164 `[alert RULE]` before
    the event message. The writer's transports send them: UDP (fire and forget), TCP and
    TLS (a notification's messages count as sent once the collector's TCP stack
    acknowledged them). Retryable: no connection, a timeout, a connection the collector
    closed or reset. Socket work runs on the receiver's own thread.
    """

    def __init__(self, options: SyslogOptions, name: str = "syslog") -> None:
        self.name = name
        self.options = options
        self._writer = SyslogWriter(options, name=name)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"receiver-{name}")

    def messages(self, notification: Notification) -> list[bytes]:
        formatter = self._writer.formatter
        if isinstance(formatter, Rfc5424):
            return [
                rfc5424(formatter, notification, event, self._writer.max_bytes)
                for event in notification.events
            ]
        return [rfc3164(self._writer, notification, event) for event in notification.events]

    def _send(self, messages: Sequence[bytes]) -> None:
        self._writer.sender.send(messages)

    async def deliver(self, notification: Notification) -> None:
        messages = self.messages(notification)
        if not messages:
            return
        host, port = self.options.host_port
        where = f"syslog {self.name!r} ({self.options.transport} {host}:{port})"
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._send, messages)
        except TimeoutError as exc:
            raise DeliveryError(f"{where}: timed out: {exc}", retryable=True) from None
        except OSError as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}", retryable=True) from None

    async def close(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, True)
        await self._writer.close()


Receiver = SyslogReceiver


def build(options: SyslogOptions, name: str, registry: Registry | None) -> SyslogReceiver:
    return SyslogReceiver(options, name=name)
