"""The forward writer (kind `forward`): streams this proxy's changes to another one (a central
proxy, or the next of a chain) over EventForwardService.

It follows the log like every writer, so its bookmark moves only once the other proxy has
answered that the changes are persisted there; until then they stay in this proxy's log
(which, full, refuses recorders with RESOURCE_EXHAUSTED: they spool). The dispatcher retries a
failed batch with capped jittered backoff for as long as it fails: nothing is dropped by age.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from protoevents.proxy.changelog import varint
from protoevents.proxy.changes import UPDATED, Change, PermanentWriteError
from protoevents.proxy.forwarded import site_problem
from protoevents.proxy.writers.base import BuildContext, WriterConfigError, WriterOptions
from protoevents.recorder.tls import ClientTLS, ClientTLSError, TLSFiles
from protoevents.recorder.token import metadata
from protoevents.v1 import forward_service_pb2

log = logging.getLogger(__name__)

_METHOD = "/protoevents.v1.EventForwardService/Forward"
_FIELDS = forward_service_pb2.ForwardRequest.DESCRIPTOR.fields_by_name
_CREATED_KEY = bytes([_FIELDS["created"].number << 3 | 2])
_UPDATED_KEY = bytes([_FIELDS["updated"].number << 3 | 2])
# The channel's own reconnect backoff (gRPC's default grows to 120 s) would keep new streams
# failing long after the other proxy is back: the dispatcher's backoff spaces the retries.
# (gRPC's minimum connect timeout stays at its default, for slow TLS handshakes.)
_RECONNECT = (("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000))
# Answers that retrying the same changes will not change: the writer sets those changes aside.
_REFUSED = (grpc.StatusCode.INVALID_ARGUMENT,)


@dataclass(frozen=True, slots=True)
class ForwardOptions(WriterOptions):
    """Where to forward (`address`, HOST:PORT or unix:PATH), the site this proxy forwards
    for, and how to reach the other proxy: TLS (`tls`, or any of the files), a client
    certificate for mTLS, a bearer token read from `token_file`."""

    address: str = ""
    site: str = ""
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    token_file: Path | None = None
    max_request_changes: int = 1000
    max_request_bytes: int = 1 << 20
    timeout_s: float = 30.0

    def validate(self) -> None:
        if not self.address:
            raise WriterConfigError("address", self.address, "the proxy to forward to is required")
        problem = site_problem(self.site)
        if problem is not None:
            raise WriterConfigError("site", self.site, problem)
        if (self.cert_file is None) != (self.key_file is None):
            raise WriterConfigError(
                "cert_file" if self.key_file is None else "key_file",
                self.cert_file or self.key_file,
                "a client certificate needs its key: give cert_file and key_file",
            )
        for key in ("max_request_changes", "max_request_bytes", "timeout_s"):
            if getattr(self, key) <= 0:
                raise WriterConfigError(key, getattr(self, key), "must be greater than 0")

    def client_tls(self) -> ClientTLS | None:
        """The TLS to the other proxy (None: plaintext)."""
        files = (self.ca_file, self.cert_file, self.key_file, self.server_name)
        if not self.tls and all(f is None for f in files):
            return None
        return ClientTLS(self.ca_file, self.cert_file, self.key_file, self.server_name)


Options = ForwardOptions


class _Stream:
    """One open Forward call: requests written, responses read in order."""

    def __init__(self, call: grpc.aio.StreamStreamCall[bytes, bytes]) -> None:
        self.call = call
        self.sequence = 0

    async def send(self, requests: list[bytes]) -> list[forward_service_pb2.ForwardResponse]:
        """Write `requests` (each the tail of a ForwardRequest, after its sequence) and read
        their responses."""
        first = self.sequence + 1
        for request in requests:
            self.sequence += 1
            await self.call.write(b"\x08" + varint(self.sequence) + request)
        responses = []
        for expected in range(first, self.sequence + 1):
            data = await self.call.read()
            if data is grpc.aio.EOF:
                raise ConnectionError("the other proxy ended the Forward stream")
            assert isinstance(data, bytes)
            response = forward_service_pb2.ForwardResponse.FromString(data)
            if response.sequence != expected:
                raise ConnectionError(f"answer {response.sequence} where {expected} was due")
            responses.append(response)
        return responses


class ForwardWriter:
    """Forwards each batch of changes as ForwardRequests on one long-lived stream, and
    returns once the other proxy has answered them all (persisted there). A failed stream is
    dropped and the batch fails: the dispatcher sends it again, on a new stream, after its
    backoff (the other proxy stores each event once whatever is sent twice). A change the
    other proxy refuses (INVALID_ARGUMENT) is a PermanentWriteError: the dispatcher narrows
    the batch down to it and sets it aside. Refusals of the caller (UNAUTHENTICATED,
    PERMISSION_DENIED) are retried like any failure: they stop when the access file or the
    credentials are fixed, and nothing is set aside meanwhile."""

    rides_out = True  # central away is what the site's log is for: ingest goes on

    def __init__(self, options: ForwardOptions, name: str = "forward") -> None:
        self.name = name
        self.options = options
        site = options.site.encode()
        self._head = bytes([_FIELDS["site"].number << 3 | 2]) + varint(len(site)) + site
        self._channel: grpc.aio.Channel | None = None
        self._tls_files: TLSFiles | None = None
        self._stream: _Stream | None = None
        self.forwarded = 0

    def requests(self, changes: Sequence[Change]) -> list[bytes]:
        """The batch as ForwardRequest bodies (all but the sequence), in order, each within
        `max_request_changes` and about `max_request_bytes`."""
        options = self.options
        requests: list[bytes] = []
        parts: list[bytes] = [self._head]
        size = count = 0
        for change in changes:
            data = change.event.SerializeToString()
            full = count >= options.max_request_changes
            if count and (full or size + len(data) > options.max_request_bytes):
                requests.append(b"".join(parts))
                parts, size, count = [self._head], 0, 0
            key = _UPDATED_KEY if change.kind == UPDATED else _CREATED_KEY
            parts += (key, varint(len(data)), data)
            size += len(data)
            count += 1
        if count:
            requests.append(b"".join(parts))
        return requests

    async def write(self, changes: Sequence[Change]) -> None:
        if not changes:
            return
        requests = self.requests(changes)
        stream = await self._open()
        try:
            async with asyncio.timeout(self.options.timeout_s):
                await stream.send(requests)
        except grpc.aio.AioRpcError as exc:
            self._drop()
            where = self.options.address
            if exc.code() in _REFUSED:
                raise PermanentWriteError(f"{where} refused: {exc.details()}") from exc
            raise ConnectionError(f"{where}: {exc.code().name}: {exc.details()}") from exc
        except BaseException:
            self._drop()
            raise
        self.forwarded += len(changes)

    async def _open(self) -> _Stream:
        """The open stream, or a new one (on a new channel when the TLS files changed)."""
        if self._stream is not None and not self._stream.call.done():
            return self._stream
        self._drop()
        tls = self.options.client_tls()
        try:
            files = tls.read() if tls is not None else None
        except ClientTLSError as exc:
            raise ConnectionError(str(exc)) from None
        if self._channel is None or files != self._tls_files:
            if self._channel is not None:
                await self._channel.close()
            self._channel = _channel(self.options.address, tls, files)
            self._tls_files = files
        call: grpc.aio.StreamStreamCall[bytes, bytes] = self._channel.stream_stream(
            _METHOD, request_serializer=None, response_deserializer=None
        )(metadata=self._metadata())
        self._stream = _Stream(call)
        return self._stream

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        path = self.options.token_file
        if path is None:
            return ()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConnectionError(f"cannot read token_file {path}: {exc.strerror}") from None
        return metadata(token)

    def _drop(self) -> None:
        if self._stream is not None:
            self._stream.call.cancel()
            self._stream = None

    async def close(self) -> None:
        self._drop()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


def _channel(address: str, tls: ClientTLS | None, files: TLSFiles | None) -> grpc.aio.Channel:
    """A channel to `address`, with TLS from `files` when given `tls`."""
    options = [("grpc.max_send_message_length", 64 << 20), *_RECONNECT]
    if tls is None:
        return grpc.aio.insecure_channel(address, options)
    credentials = tls.credentials(files)
    return grpc.aio.secure_channel(address, credentials, options + tls.channel_options())


def build(options: ForwardOptions, name: str, context: BuildContext) -> ForwardWriter:
    return ForwardWriter(options, name=name)
