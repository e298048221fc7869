"""The syslog receiver against real collectors: one message per event in the syslog writer's
format with the alert's SD-ELEMENT, UDP and TCP, a collector down is retryable."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from protoevents.proxy.alerts.model import DeliveryError
from protoevents.proxy.alerts.receivers.kinds import build_receiver, parse_receiver
from protoevents.proxy.alerts.receivers.syslog import SyslogReceiver
from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.writers.syslog_format import Rfc5424
from tests.support.ingest_helpers import wait_until
from tests.support.notifications import alerting_event, notification
from tests.support.syslog_listener import TcpCollector, UdpCollector

ALERT = '[alert@32473 key="nic-down/category=cluster/1" rule="nic-down" receiver="ops"'


def receiver(port: int, **table: Any) -> SyslogReceiver:
    options = parse_receiver("syslog", {"address": f"127.0.0.1:{port}", **table})
    built = build_receiver("syslog", options, "ops-syslog")
    assert isinstance(built, SyslogReceiver)
    return built


def test_udp_one_message_per_event_with_the_alert_first() -> None:
    async def main() -> None:
        collector = await UdpCollector.start()
        events = (alerting_event(0), alerting_event(1))
        sent = notification(*events, truncated=4)
        syslog = receiver(collector.port)
        await syslog.deliver(sent)
        await wait_until(lambda: len(collector.datagrams) == 2)
        await syslog.close()
        collector.close()
        formatter = Rfc5424(1)
        for datagram, event in zip(collector.datagrams, events, strict=True):
            writer_message = formatter.format(Change(CREATED, event))
            header = formatter.header(event).encode()
            alert = f'{ALERT} truncated="4" group.category="cluster"]'.encode()
            # The writer's message, the alert's SD-ELEMENT before the event's.
            assert datagram == header + b" " + alert + writer_message[len(header) + 1 :]
            assert datagram.startswith(b"<11>1 ")  # user.err

    asyncio.run(main())


def test_udp_a_long_message_keeps_the_alert_element() -> None:
    async def main() -> None:
        collector = await UdpCollector.start()
        event = alerting_event(0, message="x" * 3000)
        syslog = receiver(collector.port, max_datagram_bytes=600)
        await syslog.deliver(notification(event))
        await wait_until(lambda: len(collector.datagrams) == 1)
        await syslog.close()
        collector.close()
        (datagram,) = collector.datagrams
        assert len(datagram) == 600
        assert ALERT.encode() in datagram

    asyncio.run(main())


def test_tcp_delivers_then_a_collector_down_is_retryable() -> None:
    async def main() -> None:
        collector = await TcpCollector().start()
        syslog = receiver(collector.port, transport="tcp")
        await syslog.deliver(notification())
        await wait_until(lambda: len(collector.messages) == 2)
        assert all(ALERT.encode() in m for m in collector.messages)
        await collector.stop()
        with pytest.raises(DeliveryError) as caught:
            await syslog.deliver(notification())
        assert caught.value.retryable
        assert "tcp 127.0.0.1" in str(caught.value)
        await collector.start()
        await syslog.deliver(notification(key="nic-down/category=cluster/2"))
        await wait_until(lambda: len(collector.messages) == 4)
        assert b'key="nic-down/category=cluster/2"' in collector.messages[-1]
        await syslog.close()
        await collector.stop()

    asyncio.run(main())


def test_rfc3164_marks_the_alert_in_the_text() -> None:
    async def main() -> None:
        collector = await UdpCollector.start()
        syslog = receiver(collector.port, format="rfc3164")
        await syslog.deliver(notification(alerting_event(0)))
        await wait_until(lambda: len(collector.datagrams) == 1)
        await syslog.close()
        collector.close()
        (datagram,) = collector.datagrams
        assert b"CLUSTER_EVENT_TYPE_LEADER_ELECTED: [alert nic-down] node-0 was elected" in datagram

    asyncio.run(main())


def test_bad_options_are_named_as_for_the_writer() -> None:
    with pytest.raises(ValueError, match="transport = 'quic': expected udp, tcp or tls"):
        parse_receiver("syslog", {"address": "h", "transport": "quic"})
