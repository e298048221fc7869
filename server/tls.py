"""TLS on the proxy's gRPC port: certificate files re-read while serving, their expiry watched.

grpc asks `CertificateReloader.fetch` for the configuration at each new connection's handshake;
it re-reads the files and hands grpc a new configuration only when their bytes changed and
make a good one (a certificate chain, its key, the client CA when mTLS is on). Bad files are
logged and the last good configuration goes on serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

DAY_S = 86_400.0
# How long a warning of a certificate close to expiry stays quiet.
EXPIRY_WARNING_EVERY_S = DAY_S


class TLSConfigError(ValueError):
    """The certificate files cannot serve: the message names the file and what is wrong."""


@dataclass(frozen=True, slots=True)
class ServerTLS:
    """The files of the proxy's certificate: chain and key, and the CA that client
    certificates must chain to (`client_ca_file`: mTLS, a certificate is then required)."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    expiry_warning_s: float = 14 * DAY_S


@dataclass(frozen=True, slots=True)
class Loaded:
    """The bytes of one good configuration and when its leaf certificate expires."""

    files: tuple[bytes, bytes, bytes | None]
    not_after: float
    subject: str
    serial: int


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def check(tls: ServerTLS, files: tuple[bytes, bytes, bytes | None]) -> Loaded:
    """The configuration `files` (chain, key, client CA) make; TLSConfigError naming the file
    when one is not PEM of its kind or the key is not the certificate's."""
    chain, key_pem, client_ca = files
    try:
        leaf = x509.load_pem_x509_certificates(chain)[0]
    except ValueError as exc:
        why = f"tls_cert_file {tls.cert_file}: not a PEM certificate ({exc})"
        raise TLSConfigError(why) from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        why = f"tls_key_file {tls.key_file}: not a PEM private key ({exc})"
        raise TLSConfigError(why) from None
    if key.public_key() != leaf.public_key():
        raise TLSConfigError(
            f"tls_key_file {tls.key_file} is not the key of the certificate in {tls.cert_file}"
        )
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError as exc:
            raise TLSConfigError(
                f"tls_client_ca_file {tls.client_ca_file}: not PEM certificates ({exc})"
            ) from None
    return Loaded(
        files,
        leaf.not_valid_after_utc.astimezone(UTC).timestamp(),
        leaf.subject.rfc4514_string(),
        leaf.serial_number,
    )


def read_files(tls: ServerTLS) -> tuple[bytes, bytes, bytes | None]:
    chain = _read(tls.cert_file, "tls_cert_file")
    key = _read(tls.key_file, "tls_key_file")
    client_ca = None
    if tls.client_ca_file is not None:
        client_ca = _read(tls.client_ca_file, "tls_client_ca_file")
    return chain, key, client_ca


def configuration(loaded: Loaded) -> grpc.ServerCertificateConfiguration:
    chain, key, client_ca = loaded.files
    return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=client_ca)


class CertificateReloader:
    """The certificate configuration grpc serves, re-read from the files when they change.
    `clock` gives the wall time (seconds since the epoch), for the expiry warning."""

    def __init__(self, tls: ServerTLS, clock: Callable[[], float] = time.time) -> None:
        self.tls = tls
        self._clock = clock
        self._lock = threading.Lock()
        self._rejected: tuple[bytes, bytes, bytes | None] | None = None
        self._last_error = ""
        self._warned_at: float | None = None
        self.current = check(tls, read_files(tls))  # raises: a proxy never starts on bad files
        self._taken(self.current)

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials asking `fetch` at each handshake."""
        return grpc.dynamic_ssl_server_credentials(
            configuration(self.current),
            self.fetch,  # type: ignore[arg-type]  # grpc's docs: None keeps the configuration
            require_client_authentication=self.tls.client_ca_file is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed into a good one, else None (grpc keeps
        the one it has). Never raises: it runs inside grpc's handshake."""
        try:
            return self._fetch()
        except Exception:  # a fault here would fail the handshake: keep serving
            log.exception("TLS: cannot check the certificate files; keeping the last good ones")
            return None

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            try:
                files = read_files(self.tls)
            except TLSConfigError as exc:
                self._reject(exc)
                return None
            if files == self.current.files:
                self.warn_if_expiring()
                return None
            if files == self._rejected:
                return None
            try:
                loaded = check(self.tls, files)
            except TLSConfigError as exc:
                self._rejected = files
                self._reject(exc)
                return None
            self.current, self._rejected, self._last_error = loaded, None, ""
            self._taken(loaded)
            log.info(
                "TLS: serving the renewed certificate %s (serial %x)", loaded.subject, loaded.serial
            )
            return configuration(loaded)

    def _reject(self, exc: TLSConfigError) -> None:
        """Log a problem with the files once (until another one, or a good configuration)."""
        if str(exc) != self._last_error:
            self._last_error = str(exc)
            log.warning("TLS: %s; serving the last good certificate meanwhile", exc)

    def _taken(self, loaded: Loaded) -> None:
        self._warned_at = None
        self.warn_if_expiring()

    def seconds_left(self) -> float:
        """Seconds until the certificate served expires (negative once it has)."""
        return self.current.not_after - self._clock()

    def check_expiry(self) -> None:
        """`warn_if_expiring`, from another thread than grpc's (a periodic check)."""
        with self._lock:
            self.warn_if_expiring()

    def warn_if_expiring(self) -> None:
        """Log a warning when the certificate served expires within `expiry_warning_s`, at
        most once per `EXPIRY_WARNING_EVERY_S`."""
        now = self._clock()
        left = self.seconds_left()
        if left > self.tls.expiry_warning_s:
            return
        if self._warned_at is not None and now - self._warned_at < EXPIRY_WARNING_EVERY_S:
            return
        self._warned_at = now
        if left <= 0:
            log.warning(
                "TLS: the certificate %s in %s expired %.1f days ago",
                self.current.subject,
                self.tls.cert_file,
                -left / DAY_S,
            )
        else:
            log.warning(
                "TLS: the certificate %s in %s expires in %.1f days; renew it (the new files "
                "are served without a restart)",
                self.current.subject,
                self.tls.cert_file,
                left / DAY_S,
            )
