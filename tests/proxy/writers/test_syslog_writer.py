"""The syslog writer against real collectors: UDP, TCP and TLS frames, collector restarts."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from protoevents.proxy.changes import CREATED, Change
from protoevents.proxy.dispatcher import Dispatcher
from protoevents.proxy.wal import WriteAheadLog
from protoevents.proxy.writers.syslog import SyslogOptions, SyslogWriter
from protoevents.proxy.writers.syslog_format import Rfc5424
from protoevents.recorder.backoff import Backoff
from tests.support.events import stored_event
from tests.support.ingest_helpers import make_events, wait_until
from tests.support.syslog_listener import TcpCollector, UdpCollector
from tests.support.wal import append

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def changes(count: int) -> list[Change]:
    return [Change(CREATED, stored_event(n)) for n in range(count)]


def writer(port: int, **options: Any) -> SyslogWriter:
    options.setdefault("facility", "local0")
    return SyslogWriter(SyslogOptions(address=f"127.0.0.1:{port}", **options))


def test_udp_sends_one_datagram_per_change() -> None:
    async def main() -> None:
        collector = await UdpCollector.start()
        sent = changes(3)
        syslog = writer(collector.port)
        await syslog.write(sent)
        await wait_until(lambda: len(collector.datagrams) == 3)
        assert collector.datagrams == [Rfc5424(16).format(c) for c in sent]
        await syslog.close()
        collector.close()

    run(main())


def test_udp_datagrams_over_the_limit_are_cut() -> None:
    async def main() -> None:
        collector = await UdpCollector.start()
        big = Change(CREATED, stored_event(0, message="m" * 4000))
        syslog = writer(collector.port, max_datagram_bytes=1200)
        rfc3164 = writer(collector.port, format="rfc3164", max_datagram_bytes=4000)
        await syslog.write([big])
        await rfc3164.write([big])
        await wait_until(lambda: len(collector.datagrams) == 2)
        assert [len(d) for d in collector.datagrams] == [1200, 1024]
        assert collector.datagrams[0] == Rfc5424(16).format(big)[:1200]
        for w in (syslog, rfc3164):
            await w.close()
        collector.close()

    run(main())


def test_tcp_frames_are_octet_counted() -> None:
    async def main() -> None:
        collector = await TcpCollector().start()
        sent = changes(3)
        sent[1].event.message = "multi\nline ünïcode"
        syslog = writer(collector.port, transport="tcp", format="rfc3164")
        await syslog.write(sent)
        await wait_until(lambda: len(collector.messages) == 3)
        frames = [syslog.formatter.format(c) for c in sent]
        assert bytes(collector.raw) == b"".join(b"%d %s" % (len(f), f) for f in frames)
        assert collector.messages == frames
        await syslog.close()
        await collector.stop()

    run(main())


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def tls_collector(ca: trustme.CA) -> TcpCollector:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    return TcpCollector(context)


def test_tls_delivers_to_a_collector_whose_certificate_the_ca_file_vouches_for(
    certificate_authority: trustme.CA, tmp_path: Path
) -> None:
    ca_file = tmp_path / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(ca_file))

    async def main() -> None:
        collector = await tls_collector(certificate_authority).start()
        sent = changes(5)
        syslog = writer(collector.port, transport="tls", tls_ca_file=ca_file)
        await syslog.write(sent[:2])
        await syslog.write(sent[2:])  # TLS 1.3 session tickets are not a closed connection
        await wait_until(lambda: len(collector.messages) == 5)
        assert collector.messages == [Rfc5424(16).format(c) for c in sent]
        assert collector.connections == 1
        await syslog.close()
        await collector.stop()

    run(main())


def test_tls_refuses_a_collector_it_cannot_verify_unless_told_not_to(
    certificate_authority: trustme.CA,
) -> None:
    async def main() -> None:
        collector = await tls_collector(certificate_authority).start()
        strict = writer(collector.port, transport="tls")
        with pytest.raises(ssl.SSLCertVerificationError):
            await strict.write(changes(1))
        lax = writer(collector.port, transport="tls", tls_verify=False)
        await lax.write(changes(1))
        await wait_until(lambda: len(collector.messages) == 1)
        for w in (strict, lax):
            await w.close()
        await collector.stop()

    run(main())


def test_tcp_collector_restart_loses_nothing(tmp_path: Path) -> None:
    """Through the dispatcher: while the collector is down the batch fails and is retried;
    once it is back, everything arrives, in order, once."""

    async def main() -> None:
        collector = await TcpCollector().start()
        wal = await WriteAheadLog.open(tmp_path)
        syslog = writer(collector.port, transport="tcp", connect_timeout_s=2)
        dispatcher = Dispatcher(
            wal, [syslog], batch_interval_s=0.01, backoff=Backoff(initial=0.01, maximum=0.05)
        )
        dispatcher.start()
        events = make_events(30)
        received = lambda: [m.split(b'id="')[1][:36].decode() for m in collector.messages]  # noqa: E731

        await append(wal, events[:10])
        await wait_until(lambda: received() == [e.id for e in events[:10]])
        await collector.stop()  # the collector goes down, closing the writer's connection
        await append(wal, events[10:20])
        await wait_until(lambda: dispatcher.feed(syslog.name).failures >= 2)
        await collector.start()  # back on the same port
        await append(wal, events[20:])
        await wait_until(lambda: received() == [e.id for e in events], timeout=30)
        assert collector.connections == 2
        assert await dispatcher.stop(timeout=10)
        await wal.close()
        await collector.stop()

    run(main())


def test_a_connection_the_collector_closed_while_idle_is_replaced_before_sending() -> None:
    async def main() -> None:
        collector = await TcpCollector().start()
        syslog = writer(collector.port, transport="tcp")
        await syslog.write(changes(1))
        await wait_until(lambda: len(collector.messages) == 1)
        await collector.stop()
        await collector.start()
        await syslog.write(changes(2))
        await wait_until(lambda: len(collector.messages) == 3)
        assert collector.connections == 2
        await syslog.close()
        await collector.stop()

    run(main())
