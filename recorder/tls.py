"""TLS to the proxy: the CA to trust, a client certificate for mTLS, the name to check.

`ClientTLS` names files; a recorder reads them again after a failed stream and opens a new
channel when they changed, so a renewed client certificate or CA is used from then on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

# The environment variables `ClientTLS.from_environ` reads, by field.
ENVIRON = {
    "ca_file": "PROTOEVENTS_CA_FILE",
    "cert_file": "PROTOEVENTS_CLIENT_CERT",
    "key_file": "PROTOEVENTS_CLIENT_KEY",
    "server_name": "PROTOEVENTS_SERVER_NAME",
}
# Set to 1 (true, yes, on): TLS trusting the system's CAs, when no other variable says more.
TLS_ENV = "PROTOEVENTS_TLS"
_TRUE = ("1", "true", "yes", "on")


# The bytes of the CA file, the client key and the client certificate (None: not given).
TLSFiles = tuple[bytes | None, bytes | None, bytes | None]


class ClientTLSError(ValueError):
    """A file of the client's TLS cannot be read, or the certificate comes without its key."""


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """TLS to the proxy. `ca_file`: PEM CA certificates the proxy's certificate must chain to
    (default: the system's); `cert_file` and `key_file`: the client certificate mTLS asks
    for; `server_name`: the name checked in the proxy's certificate (default: the host of
    the address dialled)."""

    ca_file: str | os.PathLike[str] | None = None
    cert_file: str | os.PathLike[str] | None = None
    key_file: str | os.PathLike[str] | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ClientTLSError("a client certificate needs its key: give both or neither")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ClientTLS | None:
        """TLS as PROTOEVENTS_CA_FILE, _CLIENT_CERT, _CLIENT_KEY and _SERVER_NAME say, or
        with the system's CAs when only PROTOEVENTS_TLS is set (to 1); None when none is."""
        env = os.environ if environ is None else environ
        values = {name: env.get(var) or None for name, var in ENVIRON.items()}
        if not any(values.values()) and env.get(TLS_ENV, "").lower() not in _TRUE:
            return None
        return cls(**values)

    def read(self) -> TLSFiles:
        """The files' bytes as they are now (CA, key, certificate; None for one not given);
        ClientTLSError naming a file that cannot be read."""
        return (
            _read(self.ca_file, "CA file"),
            _read(self.key_file, "client key"),
            _read(self.cert_file, "client certificate"),
        )

    def credentials(self, files: TLSFiles | None = None) -> grpc.ChannelCredentials:
        """Channel credentials from `files`, by default the files as they are now."""
        ca, key, chain = self.read() if files is None else files
        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel options that go with the credentials (the name checked)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientTLSError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def secure_channel(
    target: str, tls: ClientTLS | None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A blocking channel to `target` (HOST:PORT or unix:PATH), with TLS when given `tls`."""
    options = list(options or [])
    if tls is None:
        return grpc.insecure_channel(target, options)
    return grpc.secure_channel(target, tls.credentials(), options + tls.channel_options())
