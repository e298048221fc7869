"""Certificates made in the test (trustme): a CA, the proxy's certificate, a component's, as
PEM files; the proxy's renewed in place; the certificate a TLS port serves, read with `ssl`."""

from __future__ import annotations

import datetime
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

from protoevents.recorder.tls import ClientTLS

# A name the proxy's certificate holds that no address resolves to (--server-name's case).
PROXY_NAME = "proxy.events.internal"


@dataclass
class Pki:
    """A CA of its own and files under `folder`: `ca.pem`, `proxy.pem` + `proxy.key` (for
    localhost, 127.0.0.1 and PROXY_NAME), `component.pem` + `component.key` (a client
    certificate)."""

    folder: Path
    ca: trustme.CA

    @classmethod
    def make(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        pki = cls(folder, trustme.CA())
        pki.ca.cert_pem.write_to_path(str(pki.ca_file))
        pki.issue_proxy()
        client = pki.ca.issue_cert("cluster-controller")
        _write(client, pki.client_cert, pki.client_key)
        return pki

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.folder / "proxy.pem"

    @property
    def key_file(self) -> Path:
        return self.folder / "proxy.key"

    @property
    def client_cert(self) -> Path:
        return self.folder / "component.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "component.key"

    def issue_proxy(self, not_after: datetime.datetime | None = None) -> int:
        """(Re)write the proxy's certificate and key with a new certificate; its serial."""
        issued = self.ca.issue_cert("localhost", "127.0.0.1", PROXY_NAME, not_after=not_after)
        _write(issued, self.cert_file, self.key_file)
        return x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes()).serial_number

    def server_settings(self, *, mtls: bool = False) -> dict[str, Path]:
        """The proxy's settings turning TLS (and with `mtls`, client certificates) on."""
        files = {"tls_cert_file": self.cert_file, "tls_key_file": self.key_file}
        return {**files, "tls_client_ca_file": self.ca_file} if mtls else files

    def client(self, *, certificate: bool = True) -> ClientTLS:
        """TLS trusting this CA, with the component's certificate unless told not to."""
        if not certificate:
            return ClientTLS(ca_file=self.ca_file)
        return ClientTLS(self.ca_file, self.client_cert, self.client_key)


def _write(issued: trustme.LeafCert, cert_file: Path, key_file: Path) -> None:
    cert_file.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key_file))


def served_serial(address: str, ca_file: Path, client: Pki | None = None) -> int:
    """The serial of the certificate a new TLS connection to `address` is served (as a gRPC
    client would see it: ALPN h2, name localhost); with `client`, its certificate shown."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(client.client_cert, client.client_key)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def write_issued(pki: Pki, name: str) -> tuple[Path, Path]:
    """A client certificate for the DNS name `name` from `pki`'s CA, as PEM files in its
    folder: (certificate, key)."""
    cert, key = pki.folder / f"{name}.pem", pki.folder / f"{name}.key"
    _write(pki.ca.issue_cert(name), cert, key)
    return cert, key
