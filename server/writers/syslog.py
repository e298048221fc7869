"""The syslog writer (kind `syslog`): each change as an RFC 5424 or RFC 3164 message over UDP,
TCP or TLS."""

from __future__ import annotations

import asyncio
import fcntl
import select
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from protoevents.proxy.changes import Change
from protoevents.proxy.writers.base import BuildContext, WriterConfigError, WriterOptions
from protoevents.proxy.writers.client_tls import client_context
from protoevents.proxy.writers.syslog_format import RFC3164_MAX_BYTES, Rfc3164, Rfc5424

# Linux: the ioctl giving the bytes sent but not yet acknowledged by the peer (SIOCOUTQ).
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None


# Syslog facilities by name (RFC 5424 section 6.2.1).
FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "security": 13,
    "console": 14,
    "solaris-cron": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}
SYSLOG_FORMATS = ("rfc5424", "rfc3164")
SYSLOG_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}


def split_address(address: str, default_port: int) -> tuple[str, int]:
    """(host, port) of `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`."""
    host, port = address, str(default_port)
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("expected HOST:PORT or [IPV6]:PORT")
        port = rest[1:] or port
    elif address.count(":") == 1:
        host, port = address.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT or [IPV6]:PORT with a port from 1 to 65535")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class SyslogOptions(WriterOptions):
    """Syslog messages to one collector (see SyslogWriter)."""

    address: str
    format: str = "rfc5424"
    transport: str = "udp"
    facility: str = field(default="user", metadata={"integer_as_text": True})
    app_name: str = "protoevents"
    enterprise_number: int = 32473
    max_datagram_bytes: int = 2048
    tls_ca_file: Path | None = None
    tls_verify: bool = True
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_server_name: str | None = None
    connect_timeout_s: float = 5.0
    write_timeout_s: float = 30.0

    @property
    def facility_code(self) -> int:
        return FACILITIES[self.facility] if self.facility in FACILITIES else int(self.facility)

    @property
    def host_port(self) -> tuple[str, int]:
        return split_address(self.address, SYSLOG_PORTS[self.transport])

    def validate(self) -> None:
        if self.transport not in SYSLOG_PORTS:
            raise WriterConfigError("transport", self.transport, "expected udp, tcp or tls")
        if self.format not in SYSLOG_FORMATS:
            raise WriterConfigError("format", self.format, "expected rfc5424 or rfc3164")
        try:
            self.host_port  # noqa: B018 - parses the address
        except ValueError as exc:
            raise WriterConfigError("address", self.address, str(exc)) from None
        number = self.facility.isdigit() and int(self.facility) < 24
        if self.facility not in FACILITIES and not number:
            raise WriterConfigError(
                "facility", self.facility, f"expected 0-23 or one of {', '.join(FACILITIES)}"
            )
        if not 1 <= len(self.app_name) <= 48 or not all(33 <= ord(c) <= 126 for c in self.app_name):
            raise WriterConfigError(
                "app_name", self.app_name, "expected 1 to 48 printable ASCII characters, no space"
            )
        if self.enterprise_number <= 0:
            raise WriterConfigError(
                "enterprise_number", self.enterprise_number, "must be greater than 0"
            )
        if self.max_datagram_bytes < 480:
            raise WriterConfigError(
                "max_datagram_bytes",
                self.max_datagram_bytes,
                "must be at least 480 (RFC 5426: every receiver takes 480 octets)",
            )
        for key in ("connect_timeout_s", "write_timeout_s"):
            if getattr(self, key) <= 0:
                raise WriterConfigError(key, getattr(self, key), "must be greater than 0")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise WriterConfigError(
                "tls_key_file", self.tls_key_file, "tls_cert_file and tls_key_file go together"
            )
        tls_only = ("tls_ca_file", "tls_cert_file", "tls_server_name")
        for key in tls_only:
            if getattr(self, key) is not None and self.transport != "tls":
                raise WriterConfigError(key, getattr(self, key), "only used with transport tls")
        if self.transport == "tls":
            self.ssl_context()  # reads the files now, so a bad one stops the start

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context (writers/client_tls.py)."""
        cert, key = self.tls_cert_file, self.tls_key_file
        return client_context(self.tls_ca_file, self.tls_verify, cert, key)


Options = SyslogOptions


class CollectorClosedError(ConnectionError):
    """The collector closed or reset the connection while a batch was on its way."""


def octet_counted(messages: Sequence[bytes]) -> bytes:
    """Messages framed for a stream: `LENGTH SP MESSAGE` each (RFC 6587 section 3.4.1)."""
    return b"".join(b"%d %s" % (len(message), message) for message in messages)


class _DatagramSender:
    """One datagram per message, fire and forget (UDP gives no delivery signal)."""

    def __init__(self, options: SyslogOptions) -> None:
        self.host, self.port = options.host_port
        self._sock: socket.socket | None = None
        self._address: object = None
        self.connects = 0

    def send(self, messages: Sequence[bytes]) -> None:
        if self._sock is None:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            self._sock = socket.socket(family, kind, proto)
            self._address = address
            self.connects += 1
        try:
            for message in messages:
                self._sock.sendto(message, self._address)  # type: ignore[call-overload]
        except OSError:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _StreamSender:
    """Octet-counted messages on one TCP (or TLS) connection, opened when needed.

    Before a batch, a connection the collector closed is replaced (collectors send nothing,
    so anything readable means it closed). After it, on Linux, the batch counts as written
    only once the collector's TCP stack has acknowledged every byte (SIOCOUTQ reaches 0);
    a close or reset first raises, so the dispatcher sends the batch again.
    """

    def __init__(self, options: SyslogOptions) -> None:
        self.host, self.port = options.host_port
        self.connect_timeout = options.connect_timeout_s
        self.write_timeout = options.write_timeout_s
        self.context = options.ssl_context() if options.transport == "tls" else None
        self.server_name = options.tls_server_name or self.host
        self._sock: socket.socket | None = None
        self.connects = 0

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=self.server_name)
            sock.settimeout(self.write_timeout)
        except BaseException:
            sock.close()
            raise
        self.connects += 1
        return sock

    def send(self, messages: Sequence[bytes]) -> None:
        if self._sock is not None and self._peer_closed(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(octet_counted(messages))
            self._wait_acknowledged(self._sock)
        except BaseException:
            self.close()
            raise

    def _peer_closed(self, sock: socket.socket) -> bool:
        """Whether the collector closed or reset the connection; discards anything it sent
        (such as TLS session tickets)."""
        while select.select([sock], [], [], 0)[0] or (
            isinstance(sock, ssl.SSLSocket) and sock.pending()
        ):
            sock.setblocking(False)
            try:
                if not sock.recv(65536):
                    return True
            except (ssl.SSLWantReadError, BlockingIOError):
                return False
            except OSError:
                return True
            finally:
                sock.settimeout(self.write_timeout)
        return False

    def _wait_acknowledged(self, sock: socket.socket) -> None:
        if _OUTQ is None:
            return
        deadline = time.monotonic() + self.write_timeout
        pause = 0.0002
        buffer = bytearray(4)
        while True:
            fcntl.ioctl(sock.fileno(), _OUTQ, buffer)
            if struct.unpack("i", buffer)[0] == 0:
                break
            if self._peer_closed(sock):
                raise CollectorClosedError(
                    f"collector {self.host}:{self.port} closed the connection"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"collector {self.host}:{self.port} acknowledged nothing in "
                    f"{self.write_timeout} s"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, f"collector {self.host}:{self.port}: {error}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class SyslogWriter:
    """Sends every change to one syslog collector, one message per change.

    Formats: RFC 5424 (default) or RFC 3164 (server/writers/syslog_format.py). Transports:
    UDP (one datagram per message, cut to `max_datagram_bytes`, 1,024 at most for RFC 3164;
    lost messages go unnoticed), TCP and TLS (octet counting, RFC 6587; reconnects after the
    collector restarts; a batch is written once the collector's TCP stack acknowledged it,
    else `write` raises and the dispatcher sends it again: at least once, so a collector can
    see a message twice, never none). Socket work runs on the writer's own thread.
    """

    def __init__(self, options: SyslogOptions, name: str = "syslog") -> None:
        self.name = name
        self.options = options
        self.formatter: Rfc5424 | Rfc3164
        if options.format == "rfc3164":
            self.formatter = Rfc3164(options.facility_code, options.app_name)
        else:
            self.formatter = Rfc5424(
                options.facility_code, options.app_name, options.enterprise_number
            )
        self.max_bytes: int | None = None
        self.sender: _DatagramSender | _StreamSender
        if options.transport == "udp":
            self.max_bytes = options.max_datagram_bytes
            if options.format == "rfc3164":
                self.max_bytes = min(self.max_bytes, RFC3164_MAX_BYTES)
            self.sender = _DatagramSender(options)
        else:
            self.sender = _StreamSender(options)
        self.sent = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"writer-{name}")
        self._closed = False

    def write_blocking(self, changes: Sequence[Change]) -> None:
        """Format and send one batch on the calling thread."""
        messages = [self.formatter.format(change, self.max_bytes) for change in changes]
        self.sender.send(messages)
        self.sent += len(messages)

    async def write(self, changes: Sequence[Change]) -> None:
        if self._closed:
            raise RuntimeError(f"writer {self.name!r} is closed")
        if changes:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self.write_blocking, changes)

    async def close(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, True)
        self.sender.close()


def build(options: SyslogOptions, name: str, context: BuildContext) -> SyslogWriter:
    return SyslogWriter(options, name=name)
